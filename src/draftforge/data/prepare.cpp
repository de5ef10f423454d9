#include "draftforge/data/prepare.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>

#include "draftforge/data/chat_prepare.h"
#include "draftforge/data/record_index.h"
#include "draftforge/data/token_dataset.h"
#include "draftforge/engine/model_config.h"
#include "draftforge/io/token_freq.h"
#include "draftforge/util/fs.h"
#include "draftforge/util/numpy_random.h"
#include "draftforge/util/progress.h"

namespace draftforge::data {
namespace {

namespace fs = std::filesystem;
using simdjson::ondemand::json_type;

// simdjson 3.0 has no document::at_end(); current_location() reports
// OUT_OF_BOUNDS once every token was consumed.
bool AtEnd(simdjson::ondemand::document& document) {
  const char* location = nullptr;
  return document.current_location().get(location) == simdjson::OUT_OF_BOUNDS;
}

// Raw JSON text of a value, for messages.
std::string RawText(simdjson::ondemand::value value) {
  std::string_view raw = value.raw_json_token();
  while (!raw.empty() && std::isspace(static_cast<unsigned char>(raw.back()))) raw.remove_suffix(1);
  return std::string(raw);
}

// UTF-8 byte-order mark. Python's utf-8-sig codec drops it at the start of a
// file, and some editors on Windows write it.
constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

struct PreparedRecord {
  std::vector<int64_t> ids;
  std::vector<uint8_t> mask;
  bool has_mask = false;
};

// Parses one record object. Returns a skip reason (nullptr when kept) or the
// error that fails the run. `where` is "file:line" for messages.
Result<const char*> ParseRecord(simdjson::ondemand::object object, const std::string& where,
                                int64_t vocab_size, PreparedRecord* record) {
  record->ids.clear();
  record->mask.clear();
  record->has_mask = false;
  bool have_ids = false;
  for (auto field : object) {
    std::string_view key;
    if (field.unescaped_key().get(key) != simdjson::SUCCESS) {
      return Status::Invalid("{}: malformed JSON (bad object key)", where);
    }
    if (key == "conversations" || key == "messages") {
      return Status::Invalid(
          "{}: the record has '{}' (chat data) but the run reads pre-tokenized records, "
          "because the first record of the first --data file is pre-tokenized; prepare chat and "
          "pre-tokenized files in separate runs",
          where, key);
    }
    const bool is_ids = key == "input_ids";
    const bool is_mask = key == "loss_mask";
    if (!is_ids && !is_mask) continue;  // other fields (ids, text, ...) are ignored
    const std::string name(key);
    simdjson::ondemand::array array;
    if (field.value().get_array().get(array) != simdjson::SUCCESS) {
      return Status::Invalid("{}: field '{}' must be an array", where, name);
    }
    int64_t position = 0;
    for (auto element : array) {
      json_type type;
      if (element.type().get(type) != simdjson::SUCCESS) {
        return Status::Invalid("{}: malformed JSON in field '{}' at position {}", where, name,
                               position);
      }
      if (is_ids) {
        int64_t id = 0;
        if (type != json_type::number || element.get_int64().get(id) != simdjson::SUCCESS) {
          return Status::Invalid("{}: field 'input_ids' position {} is {}, not an integer token id",
                                 where, position, RawText(element.value_unsafe()));
        }
        if (id < 0 || (vocab_size > 0 && id >= vocab_size)) {
          return Status::Invalid(
              "{}: field 'input_ids' position {} has token id {}, outside [0, {}); the data was "
              "tokenized for a different model{}",
              where, position, id, vocab_size > 0 ? std::to_string(vocab_size) : "inf",
              vocab_size > 0 ? "" : " (ids must be non-negative)");
        }
        record->ids.push_back(id);
      } else {
        uint8_t flag = 0;
        bool ok = false;
        if (type == json_type::boolean) {
          bool value = false;
          ok = element.get_bool().get(value) == simdjson::SUCCESS;
          flag = value ? 1 : 0;
        } else if (type == json_type::number) {
          int64_t value = -1;
          ok = element.get_int64().get(value) == simdjson::SUCCESS && (value == 0 || value == 1);
          flag = static_cast<uint8_t>(value);
        }
        if (!ok) {
          return Status::Invalid(
              "{}: field 'loss_mask' position {} is {}; values must be 0, 1, true or false",
              where, position, RawText(element.value_unsafe()));
        }
        record->mask.push_back(flag);
      }
      ++position;
    }
    if (is_ids) have_ids = true;
    if (is_mask) record->has_mask = true;
  }
  if (!have_ids) {
    return Status::Invalid("{}: the record has no 'input_ids' field; prepare needs "
                           "pre-tokenized records {{\"input_ids\": [...], \"loss_mask\": [...]}}",
                           where);
  }
  if (record->ids.empty()) return kSkipEmpty;
  if (!record->has_mask) {
    record->mask.assign(record->ids.size(), 1);
  } else if (record->mask.size() != record->ids.size()) {
    return kSkipMaskLength;
  }
  return nullptr;
}

// Reads all records of one source into `rows`, counting skips in `summary`.
// `truncated()` has one flag per row of the last source read: whether that
// row was cut to seq_length.
class SourceReader {
 public:
  SourceReader(const PrepareOptions& options, int64_t vocab_size, PrepareSummary* summary,
               ProgressBar* progress)
      : options_(options), vocab_size_(vocab_size), summary_(summary), progress_(progress) {}

  Status Read(const std::string& path, TokenDataset* rows) {
    truncated_.clear();
    row_of_record_.clear();
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status::NotFound("--data file not found or unreadable: {}", path);
    char bom[3] = {};
    in.read(bom, 3);
    if (std::string_view(bom, in.gcount()) != kUtf8Bom) {
      in.clear();
      in.seekg(0);
    }
    char first = 0;
    while (in.get(first) && std::isspace(static_cast<unsigned char>(first))) {
    }
    in.close();
    if (first == '[') return ReadJsonArray(path, rows);
    return ReadJsonLines(path, rows);
  }

  const std::vector<uint8_t>& truncated() const { return truncated_; }
  // Per record of the last source read, in file order: its row in `rows`, or
  // -1 when the record was skipped.
  const std::vector<int64_t>& row_of_record() const { return row_of_record_; }

 private:
  // Streams the file line by line, so memory does not grow with the input
  // beyond the rows kept.
  Status ReadJsonLines(const std::string& path, TokenDataset* rows) {
    std::ifstream in(path, std::ios::binary);
    std::string line;
    int64_t line_number = 0;
    simdjson::ondemand::parser parser;
    while (std::getline(in, line)) {
      ++line_number;
      const size_t line_bytes = line.size() + 1;
      if (line_number == 1 && line.starts_with(kUtf8Bom)) line.erase(0, kUtf8Bom.size());
      while (!line.empty() && (line.back() == '\r' || std::isspace(static_cast<unsigned char>(line.back())))) {
        line.pop_back();
      }
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      const std::string where = fmt::format("{}:{}", path, line_number);
      simdjson::padded_string padded(line);
      simdjson::ondemand::document document;
      simdjson::ondemand::object object;
      if (parser.iterate(padded).get(document) != simdjson::SUCCESS ||
          document.get_object().get(object) != simdjson::SUCCESS) {
        return Status::Invalid("{}: malformed JSON line; expected one JSON object per line", where);
      }
      DF_RETURN_NOT_OK(Handle(object, where, rows));
      if (!AtEnd(document)) {
        return Status::Invalid("{}: malformed JSON line (extra text after the object)", where);
      }
      if (progress_ != nullptr) progress_->Advance(1, 0, static_cast<int64_t>(line_bytes));
    }
    if (in.bad()) return Status::IOError("read failed on {}", path);
    return Status::OK();
  }

  Status ReadJsonArray(const std::string& path, TokenDataset* rows) {
    simdjson::padded_string text;
    if (simdjson::padded_string::load(path).get(text) != simdjson::SUCCESS) {
      return Status::IOError("cannot read {}", path);
    }
    if (std::string_view(text).starts_with(kUtf8Bom)) {
      text = simdjson::padded_string(std::string_view(text).substr(kUtf8Bom.size()));
    }

    simdjson::ondemand::parser parser;
    simdjson::ondemand::document document;
    simdjson::ondemand::array array;
    if (parser.iterate(text).get(document) != simdjson::SUCCESS ||
        document.get_array().get(array) != simdjson::SUCCESS) {
      return Status::Invalid("{}:1: malformed JSON; expected an array of records", path);
    }

    // Line numbers are counted lazily up to each record's start.
    const char* counted_to = text.data();
    int64_t line_number = 1;
    int64_t index = 0;
    for (auto element : array) {
      const char* location = nullptr;
      if (element.current_location().get(location) == simdjson::SUCCESS && location > counted_to) {
        line_number += std::count(counted_to, location, '\n');
        counted_to = location;
      }
      const std::string where = fmt::format("{}:{} (record {})", path, line_number, index);
      simdjson::ondemand::object object;
      if (element.get_object().get(object) != simdjson::SUCCESS) {
        return Status::Invalid("{}: malformed JSON or not an object", where);
      }
      DF_RETURN_NOT_OK(Handle(object, where, rows));
      if (progress_ != nullptr) progress_->Advance(1);
      ++index;
    }
    if (!AtEnd(document)) {
      return Status::Invalid("{}: malformed JSON after record {}", path, index);
    }
    return Status::OK();
  }

  Status Handle(simdjson::ondemand::object object, const std::string& where, TokenDataset* rows) {
    ++summary_->records_read;
    DF_ASSIGN_OR_RAISE(const char* skip, ParseRecord(object, where, vocab_size_, &record_));
    bool truncated = false;
    if (skip == nullptr && static_cast<int64_t>(record_.ids.size()) > options_.seq_length) {
      record_.ids.resize(options_.seq_length);
      record_.mask.resize(options_.seq_length);
      truncated = true;
    }
    if (skip == nullptr &&
        std::find(record_.mask.begin(), record_.mask.end(), 1) == record_.mask.end()) {
      skip = kSkipNoTrainable;
    }
    if (skip != nullptr) {
      ++summary_->skipped[skip];
      row_of_record_.push_back(-1);
      return Status::OK();
    }
    row_of_record_.push_back(rows->num_rows());
    rows->AppendRow(record_.ids, record_.mask);
    truncated_.push_back(truncated ? 1 : 0);
    return Status::OK();
  }

  const PrepareOptions& options_;
  int64_t vocab_size_;
  PrepareSummary* summary_;
  ProgressBar* progress_;  // null when progress is off
  PreparedRecord record_;
  std::vector<uint8_t> truncated_;
  std::vector<int64_t> row_of_record_;
};

bool HasArrowFiles(const std::string& dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) return false;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    if (entry.path().extension() == ".arrow") return true;
  }
  return false;
}

}  // namespace

std::vector<int64_t> ShuffledIndices(int64_t n, uint64_t seed) { return util::NumpyPermutation(seed, n); }

std::string PrepareSummary::ToString() const {
  std::string text = fmt::format(
      "read {} records; kept {} rows with {} tokens ({} trainable), {} of the kept rows "
      "truncated to --seq-length",
      records_read, rows_kept, tokens, trainable_tokens, truncated_rows);
  int64_t skipped_total = 0;
  for (const auto& [reason, count] : skipped) skipped_total += count;
  text += fmt::format("; skipped {} records", skipped_total);
  for (const auto& [reason, count] : skipped) text += fmt::format("\n  skipped ({}): {}", reason, count);
  return text;
}

Result<PrepareSummary> RunPrepare(const PrepareOptions& options) {
  PrepareSummary summary;
  if (options.data_files.empty()) return Status::Invalid("give at least one --data FILE");
  if (options.output_dir.empty()) return Status::Invalid("give the output directory with --output");
  if (options.seq_length < 1) {
    return Status::Invalid("--seq-length must be >= 1, got {}", options.seq_length);
  }
  if (options.max_samples && *options.max_samples < 1) {
    return Status::Invalid("--max-samples must be >= 1, got {}", *options.max_samples);
  }
  if (!options.overwrite && HasArrowFiles(options.output_dir)) {
    summary.output_existed = true;
    return summary;
  }

  if (options.overwrite && fs::is_directory(fs::path(options.output_dir) / "hidden_states")) {
    spdlog::warn("{} belongs to the rows being replaced; delete it before `draftforge generate`, which "
                 "otherwise keeps existing files (train rejects files whose token ids differ from the new rows)",
                 (fs::path(options.output_dir) / "hidden_states").string());
  }

  // Chat data takes its own path; the first record of the first source decides.
  {
    DF_ASSIGN_OR_RAISE(RecordIndex index, RecordIndex::Build(options.data_files.front(), /*max_records=*/1));
    if (index.size() > 0 && LooksLikeChatRecord(index.record(0))) return RunChatPrepare(options);
  }

  int64_t vocab_size = 0;
  if (!options.model_dir.empty() && !fs::exists(fs::path(options.model_dir) / "config.json")) {
    spdlog::warn("{} has no config.json, so token ids are not checked against the model's vocabulary size",
                 options.model_dir);
  } else if (!options.model_dir.empty()) {
    DF_ASSIGN_OR_RAISE(engine::ModelConfig config, engine::ModelConfig::Load(options.model_dir));
    vocab_size = config.vocab_size;
  }

  TokenDataset dataset;
  std::unique_ptr<ProgressBar> progress;
  if (options.show_progress) progress = std::make_unique<ProgressBar>("prepare", 0, "records", "read");
  SourceReader reader(options, vocab_size, &summary, progress.get());
  for (const auto& path : options.data_files) {
    TokenDataset rows;
    DF_RETURN_NOT_OK(reader.Read(path, &rows));
    // The shuffle runs over every record, skipped ones included, so that the
    // order equals datasets' shuffle of the raw file in prepare_data.py.
    const std::vector<int64_t>& row_of_record = reader.row_of_record();
    std::vector<int64_t> order = ShuffledIndices(static_cast<int64_t>(row_of_record.size()), options.seed);
    if (options.max_samples && static_cast<int64_t>(order.size()) / 3 >= *options.max_samples) {
      order.resize(3 * *options.max_samples);
    }
    for (int64_t record : order) {
      if (options.max_samples && dataset.num_rows() >= *options.max_samples) break;
      const int64_t row = row_of_record[record];
      if (row < 0) continue;
      dataset.AppendRow(rows.input_ids(row), rows.loss_mask(row));
      summary.truncated_rows += reader.truncated()[row];
    }
  }
  if (progress) progress->Finish();
  if (dataset.num_rows() == 0) {
    return Status::Invalid("no rows left to write from {} records ({}); check the input files",
                           summary.records_read, summary.ToString());
  }

  std::map<int64_t, int64_t> token_freq;
  for (int64_t r = 0; r < dataset.num_rows(); ++r) {
    auto ids = dataset.input_ids(r);
    auto mask = dataset.loss_mask(r);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (mask[i] != 0) {
        ++token_freq[ids[i]];
        ++summary.trainable_tokens;
      }
    }
  }
  summary.rows_kept = dataset.num_rows();
  summary.tokens = dataset.total_tokens();

  DF_RETURN_NOT_OK(WriteTokenDataset(options.output_dir, dataset));
  DF_RETURN_NOT_OK(WriteTokenFreqUnlessPresent(options, token_freq, &summary));
  return summary;
}

Status WriteTokenFreqUnlessPresent(const PrepareOptions& options, const std::map<int64_t, int64_t>& token_freq,
                                   PrepareSummary* summary) {
  summary->token_freq_path = options.token_freq_path.empty()
                                 ? (fs::path(options.output_dir) / "token_freq.pt").string()
                                 : options.token_freq_path;
  if (options.overwrite) {
    std::vector<fs::path> derived = {fs::path(options.output_dir) / "d2t.npy",
                                     fs::path(options.output_dir) / "t2d.npy"};
    if (options.token_freq_path.empty()) derived.push_back(summary->token_freq_path);
    for (const fs::path& path : derived) {
      std::error_code error;
      if (!fs::exists(path, error)) continue;
      if (!fs::remove(path, error) || error) {
        return Status::IOError("failed to remove {}, which was derived from the replaced rows: {}; delete it by hand",
                               path.string(), error.message());
      }
      spdlog::info("removed {}: it was derived from the rows --overwrite replaced", path.string());
    }
  }
  // Like prepare_data.py, an existing token_freq.pt is kept otherwise, even
  // when the dataset is rewritten.
  if (fs::exists(summary->token_freq_path)) return Status::OK();
  const fs::path parent = fs::path(summary->token_freq_path).parent_path();
  if (!parent.empty()) DF_RETURN_NOT_OK(CreateDirectories(parent.string()));
  DF_RETURN_NOT_OK(io::WriteTokenFreq(summary->token_freq_path, token_freq));
  summary->token_freq_written = true;
  return Status::OK();
}

}  // namespace draftforge::data
