#include "orchestrator/runner.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
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

// Kills the cgroup's OOM killer has made so far (cgroup v2 memory.events), or -1 if unknown.
long long oom_kills() {
  std::ifstream in("/sys/fs/cgroup/memory.events");
  std::string key;
  long long value = 0;
  while (in >> key >> value) {
    if (key == "oom_kill") return value;
  }
  return -1;
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
  long long oom_kills_at_start = -1;
};

std::string format_cpu_list(const std::vector<int>& cpus) {
  std::string out;
  for (std::size_t i = 0; i < cpus.size();) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j == i ? fmt::format("{}", cpus[i]) : fmt::format("{}-{}", cpus[i], cpus[j]);
    i = j + 1;
  }
  return out;
}

std::vector<int> parse_cpu_list(const std::string& text) {
  std::vector<int> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    const std::string part = text.substr(pos, end - pos);
    if (const auto dash = part.find('-'); dash != std::string::npos) {
      const int lo = std::stoi(part.substr(0, dash));
      const int hi = std::stoi(part.substr(dash + 1));
      for (int c = lo; c <= hi; ++c) out.push_back(c);
    } else if (!part.empty()) {
      out.push_back(std::stoi(part));
    }
    pos = end + 1;
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int> affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

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
    const pid_t w = ::waitpid(child_->pid, &status, WNOHANG);
    if (w == child_->pid || (w < 0 && errno == ECHILD)) {
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
  if (child_) {
    // A child that died between configs (killed while idle) is replaced, not blamed on the
    // next config.
    int status = 0;
    if (::waitpid(child_->pid, &status, WNOHANG) == child_->pid) child_.reset();
  }
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
        kv.starts_with("OMP_NUM_THREADS=") ||
        (!ctx_.cores.empty() &&
         (kv.starts_with("OMP_PROC_BIND=") || kv.starts_with("OMP_PLACES=")))) {
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
    // One place per core, threads bound close: a thread never migrates off its core. The
    // affinity mask itself is inherited from this rank, which pinned itself to the same set.
    std::string places;
    for (int c : parse_cpu_list(ctx_.cores))
      places += fmt::format("{}{{{}}}", places.empty() ? "" : ",", c);
    env.push_back("OMP_PROC_BIND=close");
    env.push_back("OMP_PLACES=" + places);
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
  child_->oom_kills_at_start = oom_kills();
  // The context goes first; the executor answers each config line with one record line.
  const std::string hello = worker::to_json(ctx_).dump() + "\n";
  if (::write(child_->to_child.get(), hello.data(), hello.size()) !=
      static_cast<ssize_t>(hello.size())) {
    throw std::runtime_error("cannot talk to executor");
  }
}

void ExecutorProcessRunner::prepare(const space::Config& config) {
  try {
    ensure_child(config);
  } catch (const std::exception&) {
    stop_child();  // run_batch tries again and records why it cannot start
  }
}

store::RunRecord ExecutorProcessRunner::run(const space::Config& config) {
  store::RunRecord record;
  run_batch(std::span<const space::Config>(&config, 1), [&](std::size_t, std::string&& json) {
    try {
      record = worker::record_from_json(nlohmann::json::parse(json));
    } catch (const std::exception& e) {
      record = worker::predicted_record(config, ctx_.peaks);
      record.status = store::status::failed;
      record.message = fmt::format("executor sent an unreadable record: {}", e.what());
    }
  });
  return record;
}

std::size_t ExecutorProcessRunner::run_batch(
    std::span<const space::Config> configs,
    const std::function<void(std::size_t, std::string&&)>& on_record,
    const std::function<Control()>& control) {
  using clock = std::chrono::steady_clock;
  // `since`: when the config started, for its wall_s (what the timeout or crash cost).
  auto failure = [&](const space::Config& config, const char* status, std::string message,
                     std::optional<clock::time_point> since = std::nullopt) {
    store::RunRecord r = worker::predicted_record(config, ctx_.peaks);
    if (since) r.metrics.wall_s = std::chrono::duration<double>(clock::now() - *since).count();
    r.status = status;
    r.message = std::move(message);
    r.provenance.host = ctx_.host;
    r.provenance.rank = ctx_.rank;
    r.provenance.cores = ctx_.cores;
    r.provenance.workers_on_host = ctx_.workers_on_host;
    r.provenance.finished_utc = worker::utc_now_iso();
    return worker::to_json(r).dump();
  };
  auto ask = [&] { return control ? control() : Control::go_on; };
  ::signal(SIGPIPE, SIG_IGN);

  // Lines sent ahead of the running config: enough to hide the round trip, few enough that
  // the pipe never fills (so a write never blocks while the executor waits for us to read).
  constexpr std::size_t kWindow = 16;
  std::array<char, 65536> buf{};
  std::size_t done = 0;         // configs with a record
  std::size_t sent = 0;         // configs written to the current child
  clock::time_point started{};  // when configs[done] started (its deadline's origin)
  bool stopping = false;        // stop_after_current seen: no new config starts

  while (done < configs.size()) {
    const Control c = ask();
    if (c == Control::stop_now) {
      stop_child();
      return done;
    }
    if (c == Control::stop_after_current) stopping = true;
    // A fresh or differently configured child: whatever was queued in the old one is resent.
    if (sent == done) {
      if (stopping) {
        stop_child();
        return done;
      }
      try {
        ensure_child(configs[done]);
      } catch (const std::exception& e) {
        on_record(done, failure(configs[done], store::status::failed, e.what()));
        ++done;
        sent = done;
        continue;
      }
      started = clock::now();
    }
    // Queue more configs that this child can run (same start-up settings).
    std::string lines;
    while (!stopping && sent < configs.size() && sent - done < kWindow &&
           configs[sent].knobs.isa_cap == child_->isa_cap &&
           configs[sent].knobs.threads == child_->threads) {
      lines += worker::to_json(configs[sent]).dump();
      lines += '\n';
      ++sent;
    }
    if (!lines.empty() && ::write(child_->to_child.get(), lines.data(), lines.size()) !=
                              static_cast<ssize_t>(lines.size())) {
      // The child is gone (e.g. killed while idle): its exit status tells how, below.
      child_->to_child.reset();
    }
    if (sent == done) {
      // The next config needs another child (ISA cap / threads changed).
      stop_child();
      continue;
    }

    // Wait for the running config's record, its deadline, its death or a stop request.
    if (auto nl = child_->buffer.find('\n'); nl != std::string::npos) {
      std::string reply = child_->buffer.substr(0, nl);
      child_->buffer.erase(0, nl + 1);
      on_record(done, std::move(reply));
      ++done;
      started = clock::now();
      if (stopping && done < configs.size()) {
        stop_child();
        return done;
      }
      continue;
    }
    const auto deadline = started + std::chrono::duration<double>(ctx_.limits.timeout_s);
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    if (left <= 0) {
      ::kill(child_->pid, SIGKILL);
      stop_child();
      on_record(done, failure(configs[done], store::status::timeout,
                              fmt::format("exceeded timeout_s = {} s; executor killed",
                                          ctx_.limits.timeout_s),
                              started));
      ++done;
      sent = done;
      continue;
    }
    pollfd pfd{child_->from_child.get(), POLLIN, 0};
    const int pr = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 100)));
    if (pr <= 0) continue;  // timeout tick or EINTR: check control and the deadline again
    const ssize_t n = ::read(child_->from_child.get(), buf.data(), buf.size());
    if (n > 0) {
      child_->buffer.append(buf.data(), static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // EOF: the executor died. Say how.
    int status = 0;
    ::waitpid(child_->pid, &status, 0);
    const long long oom_before = child_->oom_kills_at_start;
    child_.reset();
    std::string why;
    const char* st = store::status::crashed;
    if (WIFSIGNALED(status)) {
      const int sig = WTERMSIG(status);
      why = fmt::format("executor killed by signal {} ({})", sig, ::strsignal(sig));
      const long long oom_now = oom_kills();
      if (sig == SIGKILL && oom_before >= 0 && oom_now > oom_before) {
        // The kernel's OOM killer sends SIGKILL; the cgroup counts its kills.
        st = store::status::failed;
        why = fmt::format("out of memory: {} by the kernel OOM killer (cgroup oom_kill {} -> {})",
                          why, oom_before, oom_now);
      } else if (sig == SIGKILL) {
        const auto pred = worker::predicted_record(configs[done], ctx_.peaks);
        const double avail = worker::available_memory_bytes();
        if (pred.metrics.memory_bytes > 0.5 * avail) {
          why += fmt::format(
              "; possibly out of memory (predicted footprint {:.2f} GiB, {:.2f} GiB available)",
              pred.metrics.memory_bytes / 1073741824.0, avail / 1073741824.0);
        }
      }
    } else {
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      if (code == 3) {
        st = store::status::failed;
        why = "out of memory: the executor could not allocate memory";
      } else {
        why = fmt::format("executor exited with code {} without a result", code);
      }
    }
    on_record(done, failure(configs[done], st, std::move(why), started));
    ++done;
    sent = done;
  }
  return done;
}

}  // namespace dnnscape::orchestrator
