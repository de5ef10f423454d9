// Data-parallel training across processes with PyTorch's c10d runtime.
//
// Rendezvous follows torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
// MASTER_PORT. Rank 0 hosts a c10d::TCPStore at MASTER_ADDR:MASTER_PORT, and
// every rank joins a ProcessGroupGloo over it. With a CUDA libtorch and
// DRAFTFORGE_WITH_NCCL, ranks that train on CUDA use ProcessGroupNCCL instead.
//
// Every collective must be called by all ranks in the same order. A
// collective fails when a peer closes its connection or nothing arrives
// within the timeout. Each surviving rank then marks itself alive in the
// store and waits 5 s for the others to do the same. Its error names the
// ranks that stayed silent or reported their own error. A rank that loses
// the store has lost rank 0, which hosts it.
//
// Without WORLD_SIZE (or with WORLD_SIZE=1) DataParallel::Connect returns a
// single-process group whose collectives do nothing.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "draftforge/util/status.h"

namespace draftforge::train {

// This process's place in a job, read from the torchrun environment.
struct DistributedEnv {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Returns
// nullopt when WORLD_SIZE is unset. Errors name the variable and its value.
Result<std::optional<DistributedEnv>> ReadDistributedEnv();

class DataParallel {
 public:
  // Joins the job described by `env` (nullopt: a single process). `timeout`
  // bounds the rendezvous and every collective. `device` is where the
  // gradients live. Errors on an unreachable store name the address.
  static Result<std::unique_ptr<DataParallel>> Connect(const std::optional<DistributedEnv>& env,
                                                       std::chrono::milliseconds timeout, torch::Device device);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }
  bool distributed() const { return world_size_ > 1; }

  // Replaces each parameter's gradient by its mean over ranks. The gradients
  // travel in float32 buckets of at most 25 MiB, all started before the first
  // wait. A parameter without a gradient contributes zeros.
  // NOTE: the all-reduce starts after backward has finished; it does not
  // overlap with backward.
  Status AverageGradients(const std::vector<torch::Tensor>& parameters);

  // Collectives below name `operation` in their errors ("checkpoint save").
  // Sums `values` (any shape, float or integer) over ranks, in place.
  Status AllReduceSum(torch::Tensor& values, const std::string& operation);
  // Takes the element-wise maximum of `values` over ranks, in place.
  Status AllReduceMax(torch::Tensor& values, const std::string& operation);
  // Copies rank 0's `tensors` into every other rank's, in place.
  Status BroadcastFromMain(const std::vector<torch::Tensor>& tensors, const std::string& operation);
  // Waits until every rank calls Barrier.
  Status Barrier(const std::string& operation);

  // Records on the store that this rank stops with `failure`, so that peers
  // name it in their errors, then closes the process group. Rank 0 keeps the
  // store up for a few seconds so the peers can read the record.
  void Abandon(const Status& failure);

  // Seconds spent inside collectives since Connect, for the communication
  // share of step time.
  double communication_seconds() const { return communication_seconds_; }

 private:
  DataParallel() = default;
  struct Impl;
  // Runs `body` (one collective), adds its duration to the communication
  // time, and turns an exception into an error naming the lost ranks.
  template <typename Body>
  Status RunCollective(const std::string& operation, Body&& body);
  Status DiagnoseFailure(const std::string& operation, const std::string& error);

  int64_t rank_ = 0;
  int64_t world_size_ = 1;
  std::chrono::milliseconds timeout_{0};
  double communication_seconds_ = 0;
  std::unique_ptr<Impl> impl_;
};

// Options of the built-in launcher (`draftforge train --nproc-per-node N`).
struct LaunchOptions {
  int64_t nproc_per_node = 1;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 0;  // 0 = a free port on master_addr, picked at launch
  // Seconds the launcher waits for the other ranks to exit after one failed,
  // before it kills them.
  double stop_grace_seconds = 30;
};

// Starts `nproc_per_node` copies of this executable with `arguments`
// (argv[1..]) and RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
// MASTER_ADDR and MASTER_PORT set, then waits for them. When a rank exits
// non-zero or is killed, it sends SIGTERM to the others, kills them after the
// grace period, and returns an error naming that rank. SIGINT and SIGTERM sent
// to the launcher are forwarded to every rank.
Status LaunchRanks(const LaunchOptions& options, const std::vector<std::string>& arguments);

// Returns this process's arguments after argv[0], read from /proc/self/cmdline.
Result<std::vector<std::string>> CurrentArguments();

}  // namespace draftforge::train
