// token_freq.pt: a dict[int, int] (token id -> count of loss-masked
// occurrences) as torch.save writes it, and torch.load(weights_only=True)
// reads it.
//
// Container: a ZIP archive whose entries share one top-level folder, the
// archive name. torch.save names it after the file stem ("token_freq/" for
// token_freq.pt). The dict is the pickle in <prefix>/data.pkl.
//
// The writer stores (no compression) <prefix>/data.pkl, <prefix>/byteorder =
// "little" and <prefix>/version = "3\n" with correct CRC-32s, and encodes the
// dict exactly as CPython's protocol-2 pickler does (batches of 1000 items,
// smallest integer opcode per value), so the bytes match torch.save's pickle.
//
// The reader is not an unpickler: it accepts only the opcodes a dict of ints
// can produce (PROTO, FRAME, EMPTY_DICT, memo opcodes, MARK, SETITEM(S),
// BININT1/2, BININT, LONG1, LONG4, INT/LONG text forms, STOP) and rejects any
// other opcode. It reads sizes and offsets from the central directory (ZIP64
// end records included), checks CRC-32s, `byteorder` (must be little) and the
// `version` record (1 to 10). Keys must be >= 0 and counts >= 1; for a
// duplicate key the last value wins.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::io {

Result<std::map<int64_t, int64_t>> ReadTokenFreq(const std::string& path);

// Writes atomically; the archive prefix is the stem of `path`.
Status WriteTokenFreq(const std::string& path, const std::map<int64_t, int64_t>& token_freq);

// The protocol-2 pickle of a dict of ints, byte-identical to CPython's.
std::string PickleIntDict(const std::map<int64_t, int64_t>& dict);

// Parses a pickle holding a dict of ints (see the reader rules above).
// `source` names the input in messages.
Result<std::map<int64_t, int64_t>> UnpickleIntDict(std::string_view pickle,
                                                   const std::string& source);

// Builds a stored (uncompressed) ZIP archive of `entries` (name, bytes) in
// order, as the writer lays it out.
std::string BuildStoredZip(const std::vector<std::pair<std::string, std::string>>& entries);

// CRC-32 (ISO 3309, the ZIP polynomial).
uint32_t Crc32(std::string_view bytes);

}  // namespace draftforge::io
