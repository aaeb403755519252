// The farm's pure parts: worker placement, core sets, batch sizes, CPU lists; and the batched
// results write the master uses.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "orchestrator/farm.hpp"
#include "orchestrator/runner.hpp"
#include "store/results.hpp"

using namespace dnnscape::orchestrator;
namespace store = dnnscape::store;

TEST_CASE("without --workers-per-node every worker rank works, unpinned") {
  const auto p = place_workers({"a", "a", "a", "b"}, 0);
  REQUIRE(p.size() == 4);
  CHECK_FALSE(p[0].active);  // the master
  CHECK(p[1].active);
  CHECK(p[2].active);
  CHECK(p[3].active);
  CHECK(p[1].slots == 0);
  CHECK(p[1].workers_on_host == 2);  // ranks 1 and 2 share host a
  CHECK(p[3].workers_on_host == 1);
}

TEST_CASE("--workers-per-node K: the first K worker ranks of a host work, each on its slot") {
  const auto p = place_workers({"a", "a", "a", "a", "b", "b"}, 2);
  CHECK(p[1].active);
  CHECK(p[2].active);
  CHECK_FALSE(p[3].active);  // surplus on host a
  CHECK(p[1].slot == 0);
  CHECK(p[2].slot == 1);
  CHECK(p[1].slots == 2);
  CHECK(p[1].workers_on_host == 2);
  CHECK(p[4].slot == 0);
  CHECK(p[5].slot == 1);
}

TEST_CASE("a lone process is the master and works") {
  const auto p = place_workers({"a"}, 0);
  REQUIRE(p.size() == 1);
  CHECK(p[0].active);
}

TEST_CASE("core sets are disjoint, contiguous and cover the CPUs") {
  const std::vector<int> cpus{0, 1, 2, 3, 4, 5, 6};
  std::vector<int> all;
  for (int s = 0; s < 3; ++s) {
    const auto part = split_cpus(cpus, s, 3);
    CHECK(part.size() >= 2);
    all.insert(all.end(), part.begin(), part.end());
  }
  CHECK(all == cpus);
  CHECK(split_cpus(cpus, 0, 0) == cpus);  // not pinned
  CHECK(split_cpus({0, 1}, 1, 2) == std::vector<int>{1});
}

TEST_CASE("CPU lists read and print like the kernel's") {
  CHECK(format_cpu_list({0, 1, 2, 3, 8}) == "0-3,8");
  CHECK(format_cpu_list({5}) == "5");
  CHECK(parse_cpu_list("0-3,8") == std::vector<int>{0, 1, 2, 3, 8});
  CHECK(parse_cpu_list(format_cpu_list({1, 3, 4, 5})) == std::vector<int>{1, 3, 4, 5});
}

TEST_CASE("batches fill up to the cap, never below one config") {
  FarmOptions o;
  o.max_batch = 3;
  const std::vector<double> pred{5, 0.1, 0.1, 0.1, 0.1, 0.1};
  CHECK(batch_size(pred, 0, 0.25, o) == 1);  // a big config goes alone
  CHECK(batch_size(pred, 1, 0.25, o) == 2);  // 0.1 + 0.1 <= 0.25 < 0.3
  CHECK(batch_size(pred, 1, 10, o) == 3);    // max_batch
  CHECK(batch_size(pred, 5, 0.01, o) == 1);
}

namespace {
store::RunRecord record(int i, const char* status) {
  store::RunRecord r;
  r.config.family = dnnscape::space::Family::fc;
  r.config.layers = i;
  r.config.nodes = 16;
  r.config.input = 8;
  r.config.output = 4;
  r.config.batch = 2;
  r.config_id = r.config.config_id();
  r.status = status;
  r.metrics.step_time_s = 0.001 * i;
  r.metrics.reps = 2;
  r.samples = {0.001 * i, 0.001 * i};
  r.ops = {{0, "matmul", "forward", 1e-4, 10, 20, "ref"}};
  return r;
}
}  // namespace

TEST_CASE("write_many equals write of each: rows, retries in place, samples and ops") {
  const std::filesystem::path path = "batched.h5";
  std::filesystem::remove(path);
  store::FileMeta meta;
  meta.spec_name = "t";
  meta.spec_sha256 = "abc";
  meta.spec_yaml = "name: t";
  store::HostInfo host;
  host.hostname = "h1";
  host.workers = 2;
  {
    auto w = store::ResultsWriter::create(path, meta, {}, {host});
    std::vector<store::RunRecord> batch{record(1, "ok"), record(2, "crashed"), record(3, "ok")};
    w.write_many(batch);
    // A retried row is overwritten in place; a new one appended; both in one batch.
    std::vector<store::RunRecord> second{record(2, "ok"), record(4, "ok")};
    w.write_many(second);
    w.write_many({});
    CHECK(w.rows().size() == 4);
    CHECK(w.rows().at(record(2, "ok").config_id).status == "ok");
  }
  {
    store::HostInfo other;
    other.hostname = "h2";
    store::OpenOptions opts;
    opts.hosts = {other};
    store::FileMeta grown = meta;
    grown.spec_sha256 = "def";
    grown.spec_yaml = "name: t2";
    opts.extend_with = grown;
    auto w = store::ResultsWriter::open(path, opts);
    CHECK(w.meta().spec_sha256 == "def");
    CHECK(w.hosts().size() == 2);
  }
  store::ResultsReader r(path);
  REQUIRE(r.rows() == 4);
  const auto ids = r.read_string("config_id");
  const auto st = r.read_string("status");
  CHECK(ids[1] == record(2, "ok").config_id);
  CHECK(st[1] == "ok");
  CHECK(r.group_rows("samples") == 10);  // 2 per record, the retry's appended
  CHECK(r.group_rows("ops") == 5);
  const auto recs = r.read_records();
  CHECK(recs[1].samples.size() == 4);
  CHECK(recs[3].ops.size() == 1);
  CHECK(r.meta().spec_sha256 == "def");
  CHECK(r.meta().spec_history.find("\"abc\"") != std::string::npos);  // the original is kept
  CHECK(r.meta().spec_history.find("\"def\"") != std::string::npos);
  const auto hosts = r.hosts();
  REQUIRE(hosts.size() == 2);
  CHECK(hosts[0].hostname == "h1");
  CHECK(hosts[0].workers == 2);
  CHECK(hosts[1].hostname == "h2");
}
