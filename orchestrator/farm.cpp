#include "orchestrator/farm.hpp"

#include <fmt/format.h>
#include <mpi.h>

#include <deque>
#include <nlohmann/json.hpp>
#include <set>

#include "orchestrator/mpi_check.hpp"
#include "orchestrator/runner.hpp"

namespace dnnscape::orchestrator {
namespace {

enum Tag : int { kRequest = 1, kWork = 2, kStop = 3 };

void send_text(const std::string& s, int dest, int tag) {
  check_mpi(MPI_Send(s.data(), static_cast<int>(s.size()), MPI_CHAR, dest, tag, MPI_COMM_WORLD),
            "MPI_Send");
}

// Receives the next message from `source` (or any), returning its text, source and tag.
struct Message {
  std::string text;
  int source = -1;
  int tag = -1;
};
Message recv_text(int source) {
  MPI_Status st;
  check_mpi(MPI_Probe(source, MPI_ANY_TAG, MPI_COMM_WORLD, &st), "MPI_Probe");
  int n = 0;
  check_mpi(MPI_Get_count(&st, MPI_CHAR, &n), "MPI_Get_count");
  Message m;
  m.text.resize(static_cast<std::size_t>(n));
  m.source = st.MPI_SOURCE;
  m.tag = st.MPI_TAG;
  check_mpi(MPI_Recv(m.text.data(), n, MPI_CHAR, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE),
            "MPI_Recv");
  return m;
}

struct Item {
  PlannedConfig planned;
  int attempts = 0;
  int avoid_rank = -1;  // a retried crash goes to another worker when there is one
  int worker = -1;      // the rank it was handed to
};

}  // namespace

std::size_t batch_size(const std::vector<double>& predicted_s, std::size_t start,
                       const FarmOptions& o) {
  std::size_t n = 0;
  double sum = 0;
  while (start + n < predicted_s.size() && n < static_cast<std::size_t>(o.max_batch)) {
    if (n > 0 && sum + predicted_s[start + n] > o.batch_target_s) break;
    sum += predicted_s[start + n];
    ++n;
  }
  return std::max<std::size_t>(n, 1);
}

void farm_master(const MpiSession& mpi, std::vector<PlannedConfig> todo, const RecordSink& sink,
                 const FarmOptions& options) {
  std::deque<Item> queue;
  for (auto& p : todo) queue.push_back({std::move(p), 0, -1});
  std::map<std::string, Item> in_flight;  // config_id -> item
  std::set<int> idle;                     // workers waiting for work that may still appear
  int active = mpi.size() - 1;

  auto next_batch = [&](int worker) {
    nlohmann::json configs = nlohmann::json::array();
    double sum = 0;
    // Prefer items this worker may take (a retried crash avoids its first worker).
    for (auto it = queue.begin(); it != queue.end();) {
      if (it->avoid_rank == worker && mpi.size() > 2) {
        ++it;
        continue;
      }
      if (!configs.empty() && (sum + it->planned.predicted_total_s > options.batch_target_s ||
                               configs.size() >= static_cast<std::size_t>(options.max_batch))) {
        break;
      }
      sum += it->planned.predicted_total_s;
      configs.push_back(worker::to_json(it->planned.config));
      it->worker = worker;
      in_flight[it->planned.config_id] = std::move(*it);
      it = queue.erase(it);
    }
    // Only avoided retries left: better the same worker than none.
    if (configs.empty() && !queue.empty()) {
      configs.push_back(worker::to_json(queue.front().planned.config));
      queue.front().worker = worker;
      in_flight[queue.front().planned.config_id] = std::move(queue.front());
      queue.pop_front();
    }
    return configs;
  };
  auto give_work_or_wait = [&](int worker) {
    if (!stop_requested().load()) {
      auto configs = next_batch(worker);
      if (!configs.empty()) {
        send_text(nlohmann::json{{"configs", configs}}.dump(), worker, kWork);
        return;
      }
      // Nothing now, but a crash elsewhere may still be retried: park the worker.
      if (!in_flight.empty()) {
        idle.insert(worker);
        return;
      }
    }
    send_text("{}", worker, kStop);
    --active;
  };

  while (active > 0) {
    const Message m = recv_text(MPI_ANY_SOURCE);
    if (m.tag != kRequest) continue;
    const auto request = nlohmann::json::parse(m.text);
    for (const auto& r : request.at("results")) {
      store::RunRecord record = worker::record_from_json(r);
      auto it = in_flight.find(record.config_id);
      if (it == in_flight.end()) continue;  // not ours (cannot happen); never write it twice
      Item item = std::move(it->second);
      in_flight.erase(it);
      if (record.status == store::status::crashed && item.attempts == 0 &&
          !stop_requested().load()) {
        item.attempts = 1;
        item.avoid_rank = m.source;
        queue.push_front(std::move(item));
        continue;
      }
      if (item.attempts > 0) record.message += fmt::format(" (attempt {})", item.attempts + 1);
      sink(record, item.planned);
    }
    // A worker asks again only when its batch is done: whatever of it did not come back is lost.
    for (auto it = in_flight.begin(); it != in_flight.end();) {
      if (it->second.worker != m.source) {
        ++it;
        continue;
      }
      store::RunRecord lost = worker::predicted_record(it->second.planned.config, {});
      lost.status = store::status::failed;
      lost.message = fmt::format("worker rank {} returned no result for this config", m.source);
      sink(lost, it->second.planned);
      it = in_flight.erase(it);
    }
    give_work_or_wait(m.source);
    // Work may have appeared (a retry) or everything may be done: serve the parked workers.
    for (auto it = idle.begin(); it != idle.end();) {
      const int w = *it;
      if (!queue.empty() && !stop_requested().load()) {
        auto configs = next_batch(w);
        if (configs.empty()) {
          ++it;
          continue;
        }
        send_text(nlohmann::json{{"configs", configs}}.dump(), w, kWork);
        it = idle.erase(it);
      } else if (in_flight.empty() || stop_requested().load()) {
        send_text("{}", w, kStop);
        --active;
        it = idle.erase(it);
      } else {
        ++it;
      }
    }
  }
}

void farm_worker(const MpiSession& mpi, const worker::RunContext& ctx,
                 const std::string& executor_path) {
  (void)mpi;
  ExecutorProcessRunner runner(executor_path, ctx);
  nlohmann::json results = nlohmann::json::array();
  for (;;) {
    send_text(nlohmann::json{{"results", results}}.dump(), 0, kRequest);
    results = nlohmann::json::array();
    const Message m = recv_text(0);
    if (m.tag == kStop) return;
    const auto work =
        nlohmann::json::parse(m.text);  // named: a temporary would die before the loop
    for (const auto& c : work.at("configs")) {
      results.push_back(worker::to_json(runner.run(worker::config_from_json(c))));
    }
  }
}

}  // namespace dnnscape::orchestrator
