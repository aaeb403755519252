#include "orchestrator/runner.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "worker/sysinfo.hpp"

extern char** environ;  // NOLINT: POSIX

namespace dnnscape::orchestrator {
namespace {

// A file descriptor that closes itself.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_ = -1;
};

std::array<Fd, 2> make_pipe() {
  std::array<int, 2> fds{};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0)
    throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
  return {Fd(fds[0]), Fd(fds[1])};
}

std::string isa_env_value(const std::string& cap) {
  std::string v = cap;
  for (auto& ch : v) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return v;
}

}  // namespace

struct ExecutorProcessRunner::Child {
  pid_t pid = -1;
  Fd to_child;
  Fd from_child;
  std::string buffer;  // bytes read past the last newline
  std::string isa_cap;
  std::int64_t threads = -1;
};

std::string default_executor_path() {
  if (const char* p = std::getenv("DNNSCAPE_EXECUTOR"); p != nullptr && *p != '\0') return p;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto candidate = self.parent_path() / "dnnscape-executor";
    if (std::filesystem::exists(candidate)) return candidate.string();
  }
  return "dnnscape-executor";
}

ExecutorProcessRunner::ExecutorProcessRunner(std::string executor_path, worker::RunContext ctx)
    : executor_path_(std::move(executor_path)), ctx_(std::move(ctx)) {}

ExecutorProcessRunner::~ExecutorProcessRunner() {
  stop_child();
}

int ExecutorProcessRunner::child_pid() const {
  return child_ ? child_->pid : -1;
}

void ExecutorProcessRunner::stop_child() {
  if (!child_) return;
  child_->to_child.reset();  // EOF tells a healthy executor to exit
  int status = 0;
  for (int i = 0; i < 50; ++i) {
    if (::waitpid(child_->pid, &status, WNOHANG) == child_->pid) {
      child_.reset();
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(child_->pid, SIGKILL);
  ::waitpid(child_->pid, &status, 0);
  child_.reset();
}

void ExecutorProcessRunner::ensure_child(const space::Config& config) {
  if (child_ && child_->isa_cap == config.knobs.isa_cap && child_->threads == config.knobs.threads)
    return;
  stop_child();
  auto in = make_pipe();   // parent -> child
  auto out = make_pipe();  // child -> parent

  // The child's environment: ours, with the oneDNN/OpenMP start-up settings of this config.
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    if (kv.starts_with("ONEDNN_MAX_CPU_ISA=") || kv.starts_with("DNNL_MAX_CPU_ISA=") ||
        kv.starts_with("OMP_NUM_THREADS=")) {
      continue;
    }
    env.emplace_back(kv);
  }
  const int threads =
      config.knobs.threads > 0 ? static_cast<int>(config.knobs.threads) : worker::available_cpus();
  env.push_back(fmt::format("OMP_NUM_THREADS={}", threads));
  if (config.knobs.isa_cap != "none")
    env.push_back("ONEDNN_MAX_CPU_ISA=" + isa_env_value(config.knobs.isa_cap));
  if (!ctx_.cores.empty()) {
    env.push_back("OMP_PROC_BIND=close");
    env.push_back(fmt::format("OMP_PLACES={{{}}}", ctx_.cores));
  }
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0].get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1].get(), STDOUT_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group: a Ctrl-C at the terminal reaches the sweep, which lets the running
  // config finish, instead of killing the executor mid-measurement.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::string path = executor_path_;
  std::array<char*, 2> argv{path.data(), nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, path.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0)
    throw std::runtime_error(
        fmt::format("cannot start executor '{}': {}", path, std::strerror(rc)));

  child_ = std::make_unique<Child>();
  child_->pid = pid;
  child_->to_child = std::move(in[1]);
  child_->from_child = std::move(out[0]);
  child_->isa_cap = config.knobs.isa_cap;
  child_->threads = config.knobs.threads;
  // The context goes first; the executor answers each config line with one record line.
  const std::string hello = worker::to_json(ctx_).dump() + "\n";
  if (::write(child_->to_child.get(), hello.data(), hello.size()) !=
      static_cast<ssize_t>(hello.size())) {
    throw std::runtime_error("cannot talk to executor");
  }
}

store::RunRecord ExecutorProcessRunner::run(const space::Config& config) {
  auto fail = [&](const char* status, std::string message) {
    store::RunRecord r = worker::predicted_record(config, ctx_.peaks);
    r.status = status;
    r.message = std::move(message);
    r.provenance.host = ctx_.host;
    r.provenance.rank = ctx_.rank;
    r.provenance.cores = ctx_.cores;
    r.provenance.workers_on_host = ctx_.workers_on_host;
    r.provenance.finished_utc = worker::utc_now_iso();
    return r;
  };
  try {
    ensure_child(config);
  } catch (const std::exception& e) {
    return fail(store::status::failed, e.what());
  }
  const std::string line = worker::to_json(config).dump() + "\n";
  ::signal(SIGPIPE, SIG_IGN);
  if (::write(child_->to_child.get(), line.data(), line.size()) !=
      static_cast<ssize_t>(line.size())) {
    stop_child();
    return fail(store::status::crashed, "executor closed its input before the config was sent");
  }

  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration<double>(ctx_.limits.timeout_s);
  std::array<char, 65536> buf{};
  for (;;) {
    if (auto nl = child_->buffer.find('\n'); nl != std::string::npos) {
      std::string reply = child_->buffer.substr(0, nl);
      child_->buffer.erase(0, nl + 1);
      try {
        return worker::record_from_json(nlohmann::json::parse(reply));
      } catch (const std::exception& e) {
        stop_child();
        return fail(store::status::failed,
                    fmt::format("executor sent an unreadable record: {}", e.what()));
      }
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    if (left <= 0) {
      ::kill(child_->pid, SIGKILL);
      stop_child();
      return fail(store::status::timeout,
                  fmt::format("exceeded timeout_s = {} s; executor killed", ctx_.limits.timeout_s));
    }
    pollfd pfd{child_->from_child.get(), POLLIN, 0};
    const int pr = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    const ssize_t n = ::read(child_->from_child.get(), buf.data(), buf.size());
    if (n > 0) {
      child_->buffer.append(buf.data(), static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // EOF: the executor died. Say how.
    int status = 0;
    ::waitpid(child_->pid, &status, 0);
    child_.reset();
    if (WIFSIGNALED(status)) {
      const int sig = WTERMSIG(status);
      // The kernel's OOM killer sends SIGKILL; say "memory" when the prediction was large.
      return fail(store::status::crashed,
                  fmt::format("executor killed by signal {} ({})", sig, ::strsignal(sig)));
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 3)
      return fail(store::status::failed, "out of memory: the executor could not allocate memory");
    return fail(store::status::crashed,
                fmt::format("executor exited with code {} without a result", code));
  }
}

}  // namespace dnnscape::orchestrator
