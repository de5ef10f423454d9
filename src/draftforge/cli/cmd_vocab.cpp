// `draftforge vocab`: builds d2t.npy and t2d.npy from token_freq.pt, with the
// flags of speculators' build_vocab_mapping.py.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "draftforge/cli/commands.h"
#include "draftforge/data/vocab_mapping.h"
#include "draftforge/engine/model_config.h"
#include "draftforge/io/token_freq.h"
#include "draftforge/util/fs.h"

namespace draftforge::cli {
namespace {

struct VocabOptions {
  std::string token_freq_path;
  int64_t draft_vocab_size = 0;
  int64_t target_vocab_size = 0;
  std::string target_model_path;
  std::string output_path;
};

Status RunVocab(const VocabOptions& options) {
  int64_t target_vocab_size = options.target_vocab_size;
  if (!options.target_model_path.empty()) {
    DF_ASSIGN_OR_RAISE(engine::ModelConfig config,
                       engine::ModelConfig::Load(options.target_model_path));
    target_vocab_size = config.vocab_size;
  }
  if (target_vocab_size <= 0) {
    return Status::Invalid("give the target vocab size with --target-vocab-size N (N > 0) or "
                           "--target-model-path DIR");
  }
  DF_ASSIGN_OR_RAISE(auto token_freq, io::ReadTokenFreq(options.token_freq_path));
  DF_ASSIGN_OR_RAISE(data::VocabMapping mapping,
                     data::BuildVocabMapping(token_freq, options.draft_vocab_size,
                                             target_vocab_size));
  DF_RETURN_NOT_OK(CreateDirectories(options.output_path));
  const std::filesystem::path dir(options.output_path);
  DF_RETURN_NOT_OK(data::SaveVocabMapping(mapping, (dir / "d2t.npy").string(),
                                          (dir / "t2d.npy").string()));
  spdlog::info("wrote {} and {}: draft vocab {} of target vocab {} ({} ids seen in {})",
               (dir / "d2t.npy").string(), (dir / "t2d.npy").string(),
               mapping.draft_vocab_size(), mapping.target_vocab_size(), token_freq.size(),
               options.token_freq_path);
  return Status::OK();
}

}  // namespace

void AddVocabCommand(CLI::App& app) {
  auto options = std::make_shared<VocabOptions>();
  auto* command = app.add_subcommand(
      "vocab", "Build the draft vocabulary mapping (d2t.npy, t2d.npy) from token_freq.pt");
  command->add_option("--token-freq-path", options->token_freq_path,
                      "token_freq.pt written by prepare")
      ->required();
  command->add_option("--draft-vocab-size", options->draft_vocab_size,
                      "Number of tokens in the draft vocabulary (Vd)")
      ->required();
  auto* size_option = command->add_option("--target-vocab-size", options->target_vocab_size,
                                          "Vocabulary size of the target model (V)");
  auto* model_option =
      command->add_option("--target-model-path", options->target_model_path,
                          "Target model directory; V is read from its config.json vocab_size");
  size_option->excludes(model_option);
  command->add_option("--output-path", options->output_path,
                      "Directory that receives d2t.npy and t2d.npy (created if missing)")
      ->required();
  command->callback([options] { ExitOnError(RunVocab(*options)); });
}

}  // namespace draftforge::cli
