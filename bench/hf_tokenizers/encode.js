// Reference side of bench/tokenizer_vs_hf.sh: encode throughput of Hugging
// Face's Rust tokenizers engine through its npm binding.
//
// Usage: node encode.js TOKENIZER_JSON SHAREGPT_JSON [ROUNDS] [IDS_OUT]
//
// Same input and rounds as bench/tokenizer_throughput.cpp: each
// conversation's message texts joined with "\n", add_special_tokens=false,
// one warm-up round, timed apart as cold_tokens_per_s. Times two ways of calling the engine, one
// awaited encode() per conversation and one encodeBatch() per round, and
// prints one JSON line per way.
const fs = require('fs')
const { Tokenizer } = require('tokenizers')

async function main() {
  const [tokenizerPath, dataPath, roundsArg, idsOut] = process.argv.slice(2)
  const rounds = Math.max(1, parseInt(roundsArg || '5', 10))
  const tokenizer = Tokenizer.fromFile(tokenizerPath)
  const data = JSON.parse(fs.readFileSync(dataPath, 'utf8'))
  const texts = data.map((record) => record.conversations.map((turn) => turn.value).join('\n'))
  const bytes = texts.reduce((sum, text) => sum + Buffer.byteLength(text, 'utf8'), 0)
  const options = { addSpecialTokens: false }

  const allIds = []
  const results = []
  for (const mode of ['encode', 'encodeBatch']) {
    const seconds = []
    let tokensPerRound = 0
    let coldSeconds = 0
    for (let round = 0; round <= rounds; round++) {
      let tokens = 0
      const start = process.hrtime.bigint()
      if (mode === 'encode') {
        for (let i = 0; i < texts.length; i++) {
          const encoding = await tokenizer.encode(texts[i], null, options)
          const ids = encoding.getIds()
          tokens += ids.length
          if (round === 0) allIds.push(ids)
        }
      } else {
        const encodings = await tokenizer.encodeBatch(texts, options)
        for (const encoding of encodings) tokens += encoding.getIds().length
      }
      const elapsed = Number(process.hrtime.bigint() - start) / 1e9
      if (round > 0) seconds.push(elapsed)
      if (round === 0) coldSeconds = elapsed
      tokensPerRound = tokens
    }
    const best = Math.min(...seconds)
    const mean = seconds.reduce((a, b) => a + b, 0) / seconds.length
    results.push({
      engine: `hf-tokenizers-npm-${require('tokenizers/package.json').version}`,
      mode,
      conversations: texts.length,
      bytes,
      tokens: tokensPerRound,
      rounds,
      // Only the first mode runs on a cold word cache.
      cold_tokens_per_s: tokensPerRound / coldSeconds,
      best_tokens_per_s: tokensPerRound / best,
      mean_tokens_per_s: tokensPerRound / mean,
    })
  }
  if (idsOut) fs.writeFileSync(idsOut, allIds.map((ids) => JSON.stringify(Array.from(ids))).join('\n') + '\n')
  for (const result of results) console.log(JSON.stringify(result))
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
