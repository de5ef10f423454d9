// A `draftforge serve` child process for tests. It starts with --ready-file,
// which gives the test its port, logs to a file and is stopped on
// destruction.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

namespace draftforge::testing {

class ServeProcess {
 public:
  // Starts `draftforge --threads 1 serve MODEL --port PORT ARGS...` (port 0
  // picks a free one) and waits until it listens; check ok() afterwards.
  ServeProcess(const std::filesystem::path& work_dir, const std::string& model,
               std::vector<std::string> args, int port = 0)
      : work_dir_(work_dir) {
    static int counter = 0;
    const std::string tag = std::to_string(counter++);
    ready_file_ = work_dir / ("ready-" + tag);
    log_file_ = work_dir / ("serve-" + tag + ".log");
    std::vector<std::string> argv = {DraftforgeBinary(), "--threads", "1", "serve", model,
                                     "--port", std::to_string(port), "--ready-file",
                                     ready_file_.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      std::FILE* log = std::fopen(log_file_.c_str(), "w");
      if (log != nullptr) {
        ::dup2(::fileno(log), STDOUT_FILENO);
        ::dup2(::fileno(log), STDERR_FILENO);
      }
      std::vector<char*> raw;
      for (auto& arg : argv) raw.push_back(arg.data());
      raw.push_back(nullptr);
      ::execv(raw[0], raw.data());
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream ready(ready_file_);
      if (ready >> port_) return;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~ServeProcess() { Kill(SIGTERM); }

  bool ok() const { return pid_ > 0 && port_ > 0; }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }
  std::string Log() const {
    std::ifstream in(log_file_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  // Sends `signal` and waits for the process; returns its wait status.
  int Kill(int signal) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  std::filesystem::path work_dir_;
  std::filesystem::path ready_file_;
  std::filesystem::path log_file_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace draftforge::testing
