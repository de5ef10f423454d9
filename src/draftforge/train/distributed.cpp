#include "draftforge/train/distributed.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(DRAFTFORGE_WITH_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

namespace draftforge::train {
namespace {

using Clock = std::chrono::steady_clock;

// How long a rank that saw a collective fail waits for its peers to report
// in the store before it names the silent ones as lost.
constexpr std::chrono::milliseconds kFailureGrace{5000};
constexpr int64_t kBucketBytes = 25 << 20;  // PyTorch DDP's default bucket_cap_mb of 25

std::string AliveKey(int64_t rank) { return fmt::format("draftforge/alive/{}", rank); }
std::string FailedKey(int64_t rank) { return fmt::format("draftforge/failed/{}", rank); }

Result<int64_t> ReadIntegerVariable(const char* name, int64_t minimum) {
  const char* text = std::getenv(name);
  if (text == nullptr) return Status::Invalid("{} is not set; set it (torchrun and --nproc-per-node do)", name);
  char* end = nullptr;
  errno = 0;
  long long value = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < minimum) {
    return Status::Invalid("{}='{}' is not an integer >= {}", name, text, minimum);
  }
  return static_cast<int64_t>(value);
}

bool IsLoopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

}  // namespace

Result<std::optional<DistributedEnv>> ReadDistributedEnv() {
  if (std::getenv("WORLD_SIZE") == nullptr) return std::optional<DistributedEnv>();
  DistributedEnv env;
  DF_ASSIGN_OR_RAISE(env.world_size, ReadIntegerVariable("WORLD_SIZE", 1));
  DF_ASSIGN_OR_RAISE(env.rank, ReadIntegerVariable("RANK", 0));
  if (env.rank >= env.world_size) {
    return Status::Invalid("RANK={} is not below WORLD_SIZE={}; ranks are 0..{}", env.rank, env.world_size,
                           env.world_size - 1);
  }
  env.local_rank = env.rank;
  if (std::getenv("LOCAL_RANK") != nullptr) {
    DF_ASSIGN_OR_RAISE(env.local_rank, ReadIntegerVariable("LOCAL_RANK", 0));
  }
  if (const char* address = std::getenv("MASTER_ADDR"); address != nullptr && *address != '\0') {
    env.master_addr = address;
  } else if (env.world_size > 1) {
    return Status::Invalid("MASTER_ADDR is not set; set it to the address of the host that runs rank 0");
  }
  if (std::getenv("MASTER_PORT") != nullptr || env.world_size > 1) {
    DF_ASSIGN_OR_RAISE(env.master_port, ReadIntegerVariable("MASTER_PORT", 1));
    if (env.master_port > 65535) return Status::Invalid("MASTER_PORT={} is not a TCP port (1..65535)", env.master_port);
  }
  return std::optional<DistributedEnv>(env);
}

struct DataParallel::Impl {
  DistributedEnv env;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#if defined(DRAFTFORGE_WITH_NCCL)
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif

  // Gloo reduces CPU tensors only in this build, so CUDA tensors travel
  // through a CPU copy unless NCCL runs the job.
  bool NeedsHostCopy(const torch::Tensor& tensor) const {
#if defined(DRAFTFORGE_WITH_NCCL)
    if (nccl) return false;
#endif
    return tensor.is_cuda();
  }

  template <typename Call>
  void WithGroup(Call&& call) {
#if defined(DRAFTFORGE_WITH_NCCL)
    if (nccl) {
      call(*nccl);
      return;
    }
#endif
    call(*gloo);
  }
};

Result<std::unique_ptr<DataParallel>> DataParallel::Connect(const std::optional<DistributedEnv>& env,
                                                            std::chrono::milliseconds timeout, torch::Device device) {
  auto parallel = std::unique_ptr<DataParallel>(new DataParallel());
  parallel->timeout_ = timeout;
  if (!env || env->world_size == 1) return parallel;
  parallel->rank_ = env->rank;
  parallel->world_size_ = env->world_size;
  parallel->impl_ = std::make_unique<Impl>();
  Impl& impl = *parallel->impl_;
  impl.env = *env;

  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(env->master_port);
  store_options.isServer = env->rank == 0;
  store_options.numWorkers = static_cast<size_t>(env->world_size);
  store_options.waitWorkers = true;
  store_options.timeout = timeout;
  spdlog::info("rank {} of {} joining the rendezvous store at {}:{} (timeout {} s)", env->rank, env->world_size,
               env->master_addr, env->master_port, timeout.count() / 1000.0);
  try {
    impl.store = c10::make_intrusive<c10d::TCPStore>(env->master_addr, store_options);
  } catch (const std::exception& error) {
    if (env->rank == 0) {
      return Status::IOError("rank 0 could not host the rendezvous store on {}:{} or not all {} ranks joined it "
                             "within {} s: {}; check that MASTER_PORT is free and that every rank was started",
                             env->master_addr, env->master_port, env->world_size, timeout.count() / 1000.0,
                             error.what());
    }
    return Status::IOError("rank {} could not reach the rendezvous store at {}:{} within {} s: {}; check "
                           "MASTER_ADDR and MASTER_PORT and that rank 0 is running",
                           env->rank, env->master_addr, env->master_port, timeout.count() / 1000.0, error.what());
  }

  try {
#if defined(DRAFTFORGE_WITH_NCCL)
    if (device.is_cuda()) {
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      impl.nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl.store, env->rank, env->world_size, options);
    }
    if (!impl.nccl) {
#endif
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      // Bind Gloo to the loopback interface for a one-machine job on
      // 127.0.0.1; GLOO_SOCKET_IFNAME picks the interface explicitly.
      if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"); interface != nullptr && *interface != '\0') {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
      } else if (IsLoopback(env->master_addr)) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      impl.gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(impl.store, env->rank, env->world_size, options);
#if defined(DRAFTFORGE_WITH_NCCL)
    }
#endif
  } catch (const std::exception& error) {
    return Status::IOError("rank {} could not connect its process group to the other {} of {} ranks: {}; check "
                           "that every rank started and can reach the others' addresses (GLOO_SOCKET_IFNAME "
                           "selects the interface)",
                           env->rank, env->world_size - 1, env->world_size, error.what());
  }
  spdlog::info("rank {} of {} connected (local rank {}, backend {})", env->rank, env->world_size, env->local_rank,
               impl.gloo ? "gloo" : "nccl");
  return parallel;
}

DataParallel::~DataParallel() = default;

template <typename Body>
Status DataParallel::RunCollective(const std::string& operation, Body&& body) {
  if (!distributed()) return Status::OK();
  if (!impl_ || !impl_->store) return Status::Invalid("{}: the process group was already closed", operation);
  auto start = Clock::now();
  try {
    body();
  } catch (const std::exception& error) {
    communication_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
    return DiagnoseFailure(operation, error.what());
  }
  communication_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  return Status::OK();
}

Status DataParallel::DiagnoseFailure(const std::string& operation, const std::string& error) {
  const DistributedEnv& env = impl_->env;
  const std::string prefix = fmt::format("{} failed on rank {} of {}", operation, rank_, world_size_);
  try {
    impl_->store->set(AliveKey(rank_), std::vector<uint8_t>{'1'});
  } catch (const std::exception&) {
    return Status::IOError("{}: lost rank 0, which hosts the rendezvous store at {}:{} (it exited, was killed or "
                           "its host is unreachable). Error: {}. Restart the job; it resumes from the last "
                           "checkpoint",
                           prefix, env.master_addr, env.master_port, error);
  }
  // Gives the peers time to notice the failure and report in.
  std::map<int64_t, std::string> reported;  // rank -> its own error
  std::vector<int64_t> silent;
  const auto deadline = Clock::now() + kFailureGrace;
  while (true) {
    silent.clear();
    try {
      for (int64_t peer = 0; peer < world_size_; ++peer) {
        if (peer == rank_ || reported.count(peer) > 0) continue;
        if (impl_->store->check({FailedKey(peer)})) {
          auto bytes = impl_->store->get(FailedKey(peer));
          reported[peer] = std::string(bytes.begin(), bytes.end());
        } else if (!impl_->store->check({AliveKey(peer)})) {
          silent.push_back(peer);
        }
      }
    } catch (const std::exception&) {
      silent = {0};
      break;
    }
    if (silent.empty() || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

  std::string causes;
  if (!silent.empty()) {
    causes += fmt::format("lost rank{} {} (no report within {} s: the process exited, was killed or hangs)",
                          silent.size() > 1 ? "s" : "", fmt::join(silent, ", "), kFailureGrace.count() / 1000.0);
  }
  for (const auto& [peer, message] : reported) {
    causes += fmt::format("{}rank {} stopped with an error: {}", causes.empty() ? "" : "; ", peer, message);
  }
  if (causes.empty()) causes = "every other rank is alive, so the collective itself failed";
  return Status::IOError("{}: {}. Error: {}. Restart the job; it resumes from the last checkpoint", prefix, causes,
                         error);
}

Status DataParallel::AverageGradients(const std::vector<torch::Tensor>& parameters) {
  if (!distributed()) return Status::OK();
  // Buckets of consecutive parameters, each flattened into one float32 tensor.
  std::vector<std::vector<size_t>> buckets(1);
  int64_t bucket_bytes = 0;
  for (size_t i = 0; i < parameters.size(); ++i) {
    int64_t bytes = parameters[i].numel() * 4;
    if (!buckets.back().empty() && bucket_bytes + bytes > kBucketBytes) {
      buckets.emplace_back();
      bucket_bytes = 0;
    }
    buckets.back().push_back(i);
    bucket_bytes += bytes;
  }
  std::vector<torch::Tensor> flat(buckets.size());
  return RunCollective("gradient all-reduce", [&] {
    torch::NoGradGuard no_grad;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (size_t b = 0; b < buckets.size(); ++b) {
      std::vector<torch::Tensor> pieces;
      for (size_t i : buckets[b]) {
        const torch::Tensor& grad = parameters[i].grad();
        pieces.push_back(grad.defined() ? grad.reshape({-1}).to(torch::kFloat32)
                                        : torch::zeros({parameters[i].numel()},
                                                       parameters[i].options().dtype(torch::kFloat32)));
      }
      flat[b] = torch::cat(pieces);
      if (impl_->NeedsHostCopy(flat[b])) flat[b] = flat[b].cpu();
      std::vector<torch::Tensor> arguments{flat[b]};
      impl_->WithGroup([&](auto& group) { works.push_back(group.allreduce(arguments)); });
    }
    for (size_t b = 0; b < buckets.size(); ++b) {
      works[b]->wait();
      flat[b].div_(static_cast<double>(world_size_));
      int64_t offset = 0;
      for (size_t i : buckets[b]) {
        torch::Tensor parameter = parameters[i];
        torch::Tensor mean = flat[b].narrow(0, offset, parameter.numel()).view(parameter.sizes());
        offset += parameter.numel();
        mean = mean.to(parameter.device(), parameter.scalar_type());
        if (parameter.grad().defined()) {
          parameter.mutable_grad().copy_(mean);
        } else {
          parameter.mutable_grad() = mean.clone();
        }
      }
    }
  });
}

Status DataParallel::AllReduceSum(torch::Tensor& values, const std::string& operation) {
  return RunCollective(operation, [&] {
    const bool host_copy = impl_->NeedsHostCopy(values);
    torch::Tensor buffer = host_copy ? values.cpu() : values;
    std::vector<torch::Tensor> arguments{buffer};
    impl_->WithGroup([&](auto& group) { group.allreduce(arguments)->wait(); });
    if (host_copy) values.copy_(buffer);
  });
}

Status DataParallel::AllReduceMax(torch::Tensor& values, const std::string& operation) {
  return RunCollective(operation, [&] {
    const bool host_copy = impl_->NeedsHostCopy(values);
    torch::Tensor buffer = host_copy ? values.cpu() : values;
    std::vector<torch::Tensor> arguments{buffer};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::MAX;
    impl_->WithGroup([&](auto& group) { group.allreduce(arguments, options)->wait(); });
    if (host_copy) values.copy_(buffer);
  });
}

Status DataParallel::BroadcastFromMain(const std::vector<torch::Tensor>& tensors, const std::string& operation) {
  return RunCollective(operation, [&] {
    torch::NoGradGuard no_grad;
    for (const torch::Tensor& tensor : tensors) {
      const bool host_copy = impl_->NeedsHostCopy(tensor);
      torch::Tensor buffer = host_copy ? tensor.detach().cpu() : tensor.detach();
      std::vector<torch::Tensor> arguments{buffer};
      c10d::BroadcastOptions options;
      options.rootRank = 0;
      impl_->WithGroup([&](auto& group) { group.broadcast(arguments, options)->wait(); });
      if (host_copy) tensor.detach().copy_(buffer);
    }
  });
}

Status DataParallel::Barrier(const std::string& operation) {
  // An all-reduce of one value, so that a failed barrier is diagnosed like
  // every other collective.
  torch::Tensor token = torch::zeros({1});
  return AllReduceSum(token, operation);
}

void DataParallel::Abandon(const Status& failure) {
  if (!distributed() || !impl_ || !impl_->store) return;
  try {
    std::string message = failure.ToString();
    impl_->store->set(FailedKey(rank_), std::vector<uint8_t>(message.begin(), message.end()));
  } catch (const std::exception&) {
    // The store is gone with rank 0; the peers see the closed connections.
  }
  impl_->gloo.reset();
#if defined(DRAFTFORGE_WITH_NCCL)
  impl_->nccl.reset();
#endif
  if (rank_ == 0) {
    // The store lives in this process: keep it until the peers have read the
    // record or the grace period ends.
    const auto deadline = Clock::now() + kFailureGrace;
    for (int64_t peer = 1; peer < world_size_; ++peer) {
      while (Clock::now() < deadline) {
        bool reported = false;
        try {
          reported = impl_->store->check({AliveKey(peer)}) || impl_->store->check({FailedKey(peer)});
        } catch (const std::exception&) {
          break;
        }
        if (reported) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }
  impl_->store.reset();
}

// ---------------------------------------------------------------------------
// Launcher

namespace {

volatile std::sig_atomic_t g_launcher_signal = 0;

extern "C" void RecordLauncherSignal(int signal_number) { g_launcher_signal = signal_number; }

Result<int64_t> PickFreePort(const std::string& address) {
  int socket_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (socket_fd < 0) return Status::IOError("socket() failed: {}", std::strerror(errno));
  sockaddr_in bound{};
  bound.sin_family = AF_INET;
  bound.sin_port = 0;
  std::string numeric = address == "localhost" ? "127.0.0.1" : address;
  if (::inet_pton(AF_INET, numeric.c_str(), &bound.sin_addr) != 1) {
    ::close(socket_fd);
    return Status::Invalid("--master-addr {} is not an IPv4 address; pass --master-port to use a host name",
                           address);
  }
  if (::bind(socket_fd, reinterpret_cast<sockaddr*>(&bound), sizeof(bound)) != 0) {
    std::string reason = std::strerror(errno);
    ::close(socket_fd);
    return Status::IOError("cannot bind a port on {}: {}; pass --master-port", address, reason);
  }
  socklen_t length = sizeof(bound);
  ::getsockname(socket_fd, reinterpret_cast<sockaddr*>(&bound), &length);
  ::close(socket_fd);
  return static_cast<int64_t>(ntohs(bound.sin_port));
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return fmt::format("ended with wait status {}", status);
}

}  // namespace

Result<std::vector<std::string>> CurrentArguments() {
  std::ifstream stream("/proc/self/cmdline", std::ios::binary);
  if (!stream) return Status::IOError("/proc/self/cmdline: cannot open; the launcher needs Linux procfs");
  std::vector<std::string> arguments;
  for (std::string argument; std::getline(stream, argument, '\0');) arguments.push_back(argument);
  if (!arguments.empty()) arguments.erase(arguments.begin());
  return arguments;
}

Status LaunchRanks(const LaunchOptions& options, const std::vector<std::string>& arguments) {
  int64_t port = options.master_port;
  if (port == 0) {
    DF_ASSIGN_OR_RAISE(port, PickFreePort(options.master_addr));
  }
  const int64_t world = options.nproc_per_node;

  std::vector<std::string> argv_strings{"draftforge"};
  argv_strings.insert(argv_strings.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (std::string& argument : argv_strings) argv.push_back(argument.data());
  argv.push_back(nullptr);

  g_launcher_signal = 0;
  auto previous_interrupt = std::signal(SIGINT, RecordLauncherSignal);
  auto previous_terminate = std::signal(SIGTERM, RecordLauncherSignal);
  std::map<pid_t, int64_t> running;  // pid -> rank
  std::optional<std::pair<int64_t, std::string>> first_failure;
  bool kill_pending = false;
  Clock::time_point kill_deadline;
  auto stop_others = [&](int signal_number) {
    for (const auto& [pid, rank] : running) ::kill(pid, signal_number);
  };

  for (int64_t rank = 0; rank < world; ++rank) {
    pid_t pid = ::fork();
    if (pid < 0) {
      first_failure = {rank, fmt::format("could not be started: fork failed: {}", std::strerror(errno))};
      break;
    }
    if (pid == 0) {
      std::signal(SIGINT, SIG_DFL);
      std::signal(SIGTERM, SIG_DFL);
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("MASTER_ADDR", options.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "rank %lld: execv(/proc/self/exe) failed: %s\n", static_cast<long long>(rank),
                   std::strerror(errno));
      ::_exit(127);
    }
    running[pid] = rank;
    spdlog::info("launcher: started rank {} of {} (pid {}), rendezvous at {}:{}", rank, world, pid,
                 options.master_addr, port);
  }
  if (first_failure) {
    stop_others(SIGTERM);
    kill_pending = true;
    kill_deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(options.stop_grace_seconds));
  }

  int forwarded_signal = 0;
  while (!running.empty()) {
    if (g_launcher_signal != 0 && forwarded_signal == 0) {
      forwarded_signal = g_launcher_signal;
      spdlog::warn("launcher: received signal {}; forwarding it to {} ranks", forwarded_signal, running.size());
      stop_others(forwarded_signal);
    }
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0 && running.count(pid) > 0) {
      const int64_t rank = running[pid];
      running.erase(pid);
      const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      if (failed && !first_failure && forwarded_signal == 0) {
        first_failure = {rank, DescribeExit(status)};
        spdlog::error("launcher: rank {} (pid {}) {}; stopping the remaining ranks ({} running)", rank, pid,
                      DescribeExit(status), running.size());
        stop_others(SIGTERM);
        kill_pending = true;
        kill_deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(options.stop_grace_seconds));
      } else if (failed) {
        spdlog::warn("launcher: rank {} (pid {}) {}", rank, pid, DescribeExit(status));
      }
      continue;
    }
    if (kill_pending && Clock::now() >= kill_deadline) {
      spdlog::error("launcher: ranks still running {} s after the failure ({} of them); killing them",
                    options.stop_grace_seconds, running.size());
      stop_others(SIGKILL);
      kill_pending = false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::signal(SIGINT, previous_interrupt);
  std::signal(SIGTERM, previous_terminate);

  if (first_failure) {
    return Status::Internal("rank {} of {} {}; the launcher stopped the other ranks (its log lines above, tagged "
                            "[rank {}], give the cause)",
                            first_failure->first, world, first_failure->second, first_failure->first);
  }
  if (forwarded_signal != 0) {
    return Status::Cancelled("the launcher received signal {} and forwarded it to every rank", forwarded_signal);
  }
  return Status::OK();
}

}  // namespace draftforge::train
