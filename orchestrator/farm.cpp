#include "orchestrator/farm.hpp"

#include <fmt/format.h>
#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <thread>
#include <unordered_map>

#include "orchestrator/mpi_check.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/runner.hpp"

namespace dnnscape::orchestrator {
namespace {

using clock = std::chrono::steady_clock;

// kResults: worker -> master, JSON {"records": [...], "not_run": [...], "wall_s": s, "stopping": b}
//           (the first one, empty, asks for work);
// kWork:    master -> worker, int64 indices into the spec's configs;
// kAbort:   master -> worker, empty: stop after the running config (grace period applies);
// kStop:    master -> worker, empty: no more work, leave.
enum Tag : int { kResults = 1, kWork = 2, kStop = 3, kAbort = 4 };

void send_bytes(const void* data, int count, MPI_Datatype type, int dest, int tag) {
  check_mpi(MPI_Send(data, count, type, dest, tag, MPI_COMM_WORLD), "MPI_Send");
}

void send_text(const std::string& s, int dest, int tag) {
  send_bytes(s.data(), static_cast<int>(s.size()), MPI_CHAR, dest, tag);
}

struct Message {
  std::string text;
  std::vector<std::int64_t> indices;
  int source = -1;
  int tag = -1;
};

// Waits for a message without spinning: Open MPI's blocking probe busy-polls, which would take a
// core from the configs measured on this host. Sleeps grow from 20 us to 2 ms while idle.
// `on_idle` runs between polls; returns false if it asked to give up waiting (no message).
bool wait_message(int source, MPI_Status& st, const std::function<bool()>& on_idle = {}) {
  auto nap = std::chrono::microseconds(20);
  for (;;) {
    int flag = 0;
    check_mpi(MPI_Iprobe(source, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st), "MPI_Iprobe");
    if (flag != 0) return true;
    if (on_idle && !on_idle()) return false;
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(2000));
  }
}

Message receive(const MPI_Status& st) {
  Message m;
  m.source = st.MPI_SOURCE;
  m.tag = st.MPI_TAG;
  if (m.tag == kWork) {
    int n = 0;
    check_mpi(MPI_Get_count(&st, MPI_INT64_T, &n), "MPI_Get_count");
    m.indices.resize(static_cast<std::size_t>(n));
    check_mpi(MPI_Recv(m.indices.data(), n, MPI_INT64_T, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD,
                       MPI_STATUS_IGNORE),
              "MPI_Recv");
    return m;
  }
  int n = 0;
  check_mpi(MPI_Get_count(&st, MPI_CHAR, &n), "MPI_Get_count");
  m.text.resize(static_cast<std::size_t>(n));
  check_mpi(MPI_Recv(m.text.data(), n, MPI_CHAR, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE),
            "MPI_Recv");
  return m;
}

struct Item {
  std::size_t todo = 0;  // index into the master's todo list
  int attempts = 0;
  int avoid_rank = -1;  // a retried crash goes to another worker when there is one
};

struct Batch {
  std::vector<Item> items;
  double predicted_s = 0;
  clock::time_point sent{};
};

}  // namespace

std::vector<Placement> place_workers(const std::vector<std::string>& host_of_rank,
                                     int workers_per_node) {
  std::vector<Placement> out(host_of_rank.size());
  if (host_of_rank.size() <= 1) return out;  // alone: the master works, unpinned
  out[0].active = false;
  std::map<std::string, std::vector<int>> ranks_on;
  for (std::size_t r = 1; r < host_of_rank.size(); ++r)
    ranks_on[host_of_rank[r]].push_back(static_cast<int>(r));
  for (const auto& [host, ranks] : ranks_on) {
    const int k = workers_per_node > 0 ? workers_per_node : 0;
    const auto working =
        k > 0 ? std::min<std::size_t>(ranks.size(), static_cast<std::size_t>(k)) : ranks.size();
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      Placement& p = out[static_cast<std::size_t>(ranks[i])];
      p.active = i < working;
      p.slot = static_cast<int>(i);
      p.slots = k;
      p.workers_on_host = static_cast<std::int64_t>(working);
    }
  }
  return out;
}

std::vector<int> split_cpus(const std::vector<int>& cpus, int slot, int slots) {
  if (slots <= 0) return cpus;
  const std::size_t n = cpus.size();
  const auto k = static_cast<std::size_t>(slots);
  const auto s = static_cast<std::size_t>(slot);
  // Slot s gets [s*n/k, (s+1)*n/k): sizes differ by at most one.
  return {cpus.begin() + static_cast<std::ptrdiff_t>(s * n / k),
          cpus.begin() + static_cast<std::ptrdiff_t>((s + 1) * n / k)};
}

std::size_t batch_size(const std::vector<double>& predicted_s, std::size_t start, double cap_s,
                       const FarmOptions& o) {
  std::size_t n = 0;
  double sum = 0;
  while (start + n < predicted_s.size() && n < static_cast<std::size_t>(o.max_batch)) {
    if (n > 0 && sum + predicted_s[start + n] > cap_s) break;
    sum += predicted_s[start + n];
    ++n;
  }
  return std::max<std::size_t>(n, 1);
}

FarmResult farm_master(const MpiSession& mpi, const std::vector<PlannedConfig>& todo,
                       const std::vector<int>& active_workers, const BatchSink& sink,
                       Progress* progress, const FarmOptions& options) {
  (void)mpi;
  FarmResult result;
  result.workers = static_cast<int>(active_workers.size());
  std::deque<Item> queue;
  double queued_predicted_s = 0;  // sum over the queue
  for (std::size_t i = 0; i < todo.size(); ++i) {
    queue.push_back({i, 0, -1});
    queued_predicted_s += todo[i].predicted_total_s;
  }
  std::map<int, Batch> busy;  // worker -> its batch
  std::set<int> parked;       // idle workers waiting for work that may still appear (retries)
  int active = static_cast<int>(active_workers.size());
  // Observed seconds per predicted second, over whole batches: scales the cost model for
  // batching (its predictions are lower bounds, and synthetic workloads ignore them).
  double observed_s = 0, observed_predicted_s = 0;
  bool stopping = false;
  bool started = false;
  clock::time_point first_dispatch{}, last_record{};

  auto take_batch = [&](int worker, Batch& batch) {
    const double ratio = observed_predicted_s > 0 ? observed_s / observed_predicted_s : 1.0;
    const double left_per_worker =
        queued_predicted_s / (2.0 * std::max<std::size_t>(active_workers.size(), 1));
    const double cap = std::min(options.batch_target_s / std::max(ratio, 1e-12), left_per_worker);
    for (auto it = queue.begin(); it != queue.end();) {
      // A retried crash avoids the worker it crashed on, when another one can take it.
      if (it->avoid_rank == worker && active_workers.size() > 1) {
        ++it;
        continue;
      }
      const double p = todo[it->todo].predicted_total_s;
      if (!batch.items.empty() &&
          (batch.predicted_s + p > cap ||
           batch.items.size() >= static_cast<std::size_t>(options.max_batch))) {
        break;
      }
      batch.predicted_s += p;
      queued_predicted_s -= p;
      batch.items.push_back(*it);
      it = queue.erase(it);
    }
    // Only avoided retries left: better the same worker than none.
    if (batch.items.empty() && !queue.empty()) {
      batch.predicted_s = todo[queue.front().todo].predicted_total_s;
      queued_predicted_s -= batch.predicted_s;
      batch.items.push_back(queue.front());
      queue.pop_front();
    }
  };
  auto dispatch = [&](int worker) {
    Batch batch;
    take_batch(worker, batch);
    if (batch.items.empty()) return false;
    std::vector<std::int64_t> indices;
    indices.reserve(batch.items.size());
    for (const auto& item : batch.items)
      indices.push_back(static_cast<std::int64_t>(todo[item.todo].index));
    batch.sent = clock::now();
    if (!started) {
      started = true;
      first_dispatch = batch.sent;
    }
    send_bytes(indices.data(), static_cast<int>(indices.size()), MPI_INT64_T, worker, kWork);
    busy[worker] = std::move(batch);
    return true;
  };
  auto release = [&](int worker) {
    send_text("", worker, kStop);
    --active;
  };
  // A worker without a batch: new work, or park it while retries may still appear, or let go.
  auto serve = [&](int worker) {
    if (!stopping && dispatch(worker)) return;
    if (!stopping && !busy.empty()) {
      parked.insert(worker);
      return;
    }
    release(worker);
  };
  auto begin_stop = [&] {
    stopping = true;
    for (const auto& [worker, batch] : busy) send_text("", worker, kAbort);
    for (int w : parked) release(w);
    parked.clear();
  };
  auto on_idle = [&] {
    if (!stopping && stop_requested().load()) begin_stop();
    if (progress != nullptr) progress->tick();
    return true;
  };

  while (active > 0) {
    MPI_Status st;
    wait_message(MPI_ANY_SOURCE, st, on_idle);
    const Message m = receive(st);
    if (m.tag != kResults) continue;
    const auto reply = nlohmann::json::parse(m.text);
    if (reply.value("stopping", false) && !stopping) {
      // A worker got the signal (e.g. Slurm or mpirun sent it to every rank): everyone stops.
      stop_requested().store(true);
      begin_stop();
    }

    Batch batch;
    if (auto b = busy.find(m.source); b != busy.end()) {
      batch = std::move(b->second);
      busy.erase(b);
    }
    std::unordered_map<std::string, std::size_t> pos;  // config_id -> item of this batch
    for (std::size_t i = 0; i < batch.items.size(); ++i)
      pos.emplace(todo[batch.items[i].todo].config_id, i);
    std::vector<bool> answered(batch.items.size(), false);

    std::vector<store::RunRecord> records;
    std::vector<const PlannedConfig*> planned;
    for (const auto& r : reply.at("records")) {
      store::RunRecord record = worker::record_from_json(r);
      auto it = pos.find(record.config_id);
      if (it == pos.end() || answered[it->second]) continue;  // not of this batch: never twice
      answered[it->second] = true;
      Item item = batch.items[it->second];
      if (record.status == store::status::crashed && item.attempts == 0 && !stopping) {
        item.attempts = 1;
        item.avoid_rank = m.source;
        queued_predicted_s += todo[item.todo].predicted_total_s;
        queue.push_front(item);
        continue;
      }
      if (item.attempts > 0) record.message += fmt::format(" (attempt {})", item.attempts + 1);
      records.push_back(std::move(record));
      planned.push_back(&todo[item.todo]);
    }
    // Configs the worker did not get to (a stop) and, should it ever happen, configs it lost.
    std::set<std::int64_t> not_run;
    for (const auto& i : reply.value("not_run", nlohmann::json::array()))
      not_run.insert(i.get<std::int64_t>());
    for (std::size_t i = 0; i < batch.items.size(); ++i) {
      if (answered[i]) continue;
      const Item& item = batch.items[i];
      const PlannedConfig& p = todo[item.todo];
      if (stopping) continue;  // stays unrecorded: a resume runs it
      if (not_run.contains(static_cast<std::int64_t>(p.index))) {
        queued_predicted_s += p.predicted_total_s;
        queue.push_front(item);
        continue;
      }
      store::RunRecord lost = worker::predicted_record(p.config, {});
      lost.status = store::status::failed;
      lost.message = fmt::format("worker rank {} returned no result for this config", m.source);
      records.push_back(std::move(lost));
      planned.push_back(&p);
    }
    if (!batch.items.empty() && not_run.empty() && !stopping) {
      observed_s += reply.value("wall_s", 0.0);
      observed_predicted_s += batch.predicted_s;
    }
    if (!records.empty()) {
      sink(records, planned);
      result.recorded += static_cast<std::int64_t>(records.size());
      last_record = clock::now();
    }

    serve(m.source);
    // Work may have appeared (a retry) or everything may be done: serve the parked workers.
    for (auto it = parked.begin(); it != parked.end();) {
      const int w = *it;
      if (!queue.empty() && !stopping) {
        it = parked.erase(it);
        if (!dispatch(w)) parked.insert(w);
      } else if (busy.empty() || stopping) {
        it = parked.erase(it);
        release(w);
      } else {
        ++it;
      }
    }
  }
  result.interrupted = stopping;
  if (started && result.recorded > 0)
    result.wall_s = std::chrono::duration<double>(last_record - first_dispatch).count();
  return result;
}

void farm_worker(const MpiSession& mpi, const worker::RunContext& ctx,
                 const std::string& executor_path, const std::vector<space::Config>& configs,
                 const FarmOptions& options) {
  (void)mpi;
  ExecutorProcessRunner runner(executor_path, ctx);
  bool aborted = false;            // the master asked to stop
  clock::time_point stop_since{};  // when this worker first saw a stop
  bool stop_seen = false;
  auto control = [&] {
    if (!aborted) {
      int flag = 0;
      MPI_Status st;
      check_mpi(MPI_Iprobe(0, kAbort, MPI_COMM_WORLD, &flag, &st), "MPI_Iprobe");
      if (flag != 0) {
        (void)receive(st);
        aborted = true;
      }
    }
    if (!aborted && !stop_requested().load()) return ExecutorProcessRunner::Control::go_on;
    if (!stop_seen) {
      stop_seen = true;
      stop_since = clock::now();
    }
    const double waited = std::chrono::duration<double>(clock::now() - stop_since).count();
    return waited < options.grace_s ? ExecutorProcessRunner::Control::stop_after_current
                                    : ExecutorProcessRunner::Control::stop_now;
  };

  // The executor starts while the first batch is on its way (most sweeps need one setting).
  if (!configs.empty()) runner.prepare(configs.front());
  std::string reply = R"({"records":[]})";
  for (;;) {
    send_text(reply, 0, kResults);
    Message m;
    do {  // skipping a late kAbort that crossed this worker's results
      MPI_Status st;
      wait_message(0, st);
      m = receive(st);
    } while (m.tag != kWork && m.tag != kStop);
    if (m.tag == kStop) return;
    const auto start = clock::now();
    // Grouped by executor start-up settings (stable), so that a batch restarts its executor
    // once per setting rather than whenever the cost order alternates between them.
    std::vector<std::int64_t> order = m.indices;
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
      const auto& ka = configs[static_cast<std::size_t>(a)].knobs;
      const auto& kb = configs[static_cast<std::size_t>(b)].knobs;
      return std::tie(ka.isa_cap, ka.threads) < std::tie(kb.isa_cap, kb.threads);
    });
    std::vector<space::Config> batch;
    batch.reserve(order.size());
    for (auto i : order) batch.push_back(configs[static_cast<std::size_t>(i)]);
    reply = R"({"records":[)";
    bool first = true;
    const std::size_t done = runner.run_batch(
        batch,
        [&](std::size_t, std::string&& json) {
          if (!first) reply += ',';
          first = false;
          reply += json;  // the executor's line, forwarded unparsed
        },
        control);
    reply += R"(],"not_run":[)";
    for (std::size_t i = done; i < order.size(); ++i)
      reply += fmt::format("{}{}", i == done ? "" : ",", order[i]);
    reply += fmt::format(R"(],"wall_s":{},"stopping":{})",
                         std::chrono::duration<double>(clock::now() - start).count(),
                         stop_seen ? "true" : "false");
    reply += '}';
  }
}

}  // namespace dnnscape::orchestrator
