// Results file, schema dnnscape/1 (docs/results-schema.md).
//
// Crash safety rests on three rules:
//  1. Everything (groups, datasets, attributes) is created before SWMR writing starts; afterwards
//     only existing 1-D datasets are extended and written, and the file is flushed at the end of
//     every write(). Raw data bypasses the chunk cache (cache size 0), so it reaches the file
//     before the metadata that makes it visible.
//  2. A record's samples and ops are appended before /runs grows, so a /runs row never exists
//     without its samples.
//  3. The number of rows is the length of the shortest /runs column (a kill between two
//     H5Dset_extent calls leaves unequal lengths); open() shrinks the longer ones back and drops
//     samples/ops that point past the last row.
//  4. Within /runs, status is written second to last and config_id last, after the other
//     columns are flushed: a kill never leaves a row that counts (config_id set) with columns
//     HDF5 has not recorded yet, or a half-overwritten retry that says "ok". open() also raises
//     the end-of-allocation to the end of the file (h5::raise_eoa_to_eof).
//  5. Writers allocate on 4 KiB pages (h5::file_access), so a SIGKILL cannot tear a metadata
//     entry across two pages.
#include "store/results.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>

#include "store/h5.hpp"
#include "store/schema.hpp"

namespace dnnscape::store {

namespace {

namespace fs = std::filesystem;
using h5::Handle;
using schema::Type;
using schema::Value;

constexpr const char* kRuns = "runs";
constexpr const char* kSamples = "samples";
constexpr const char* kOps = "ops";
constexpr const char* kSystem = "system";
constexpr const char* kHosts = "hosts";
constexpr const char* kJobs = "jobs";
constexpr const char* kRow = "row";
constexpr const char* kSampleTime = "step_time_s";
// Columns of /runs that files written before them lack (created on reopening: add_new_columns).
constexpr std::array<std::string_view, 1> kAddedColumns = {"wall_s"};

// Runs f, turning an HDF5 failure into a StoreError that names the file.
template <class F>
auto guarded(const fs::path& path, F&& f) -> decltype(f()) {
  h5::quiet_errors();
  try {
    return f();
  } catch (const h5::Error& e) {
    throw StoreError(fmt::format("{}: {}", path.string(), e.what()));
  }
}

[[noreturn]] void not_results(const fs::path& path, const std::string& why) {
  throw StoreError(fmt::format("{} is not a {} results file ({})", path.string(), kSchema, why));
}

// --- values <-> raw buffers --------------------------------------------------------------------

std::size_t elem_size(Type t, std::size_t width) {
  return t == Type::string ? std::max<std::size_t>(width, 1) : 8;
}

// Packs values of one column into the memory layout HDF5 expects.
std::vector<char> pack(Type t, std::size_t width, const std::vector<Value>& values) {
  const std::size_t es = elem_size(t, width);
  std::vector<char> buf(values.size() * es);
  for (std::size_t i = 0; i < values.size(); ++i) {
    char* dst = buf.data() + i * es;
    if (t == Type::string) {
      h5::pack_string(std::get<std::string>(values[i]), dst, es);
    } else if (t == Type::int64) {
      const std::int64_t v = std::get<std::int64_t>(values[i]);
      std::memcpy(dst, &v, 8);
    } else {
      const double v = std::get<double>(values[i]);
      std::memcpy(dst, &v, 8);
    }
  }
  return buf;
}

// A 1-D column of the file and the memory type it is written/read with.
struct Dataset {
  Handle dset;
  Type type = Type::float64;
  std::size_t width = 0;
  Handle string_type;           // memory type of string columns
  std::int64_t chunk_rows = 1;  // writer side, /runs

  // Writer side: the file space is kept in step with the extent (no H5Dget_space per row).
  Handle space;
  std::int64_t len = 0;

  [[nodiscard]] hid_t mem_type() const {
    return type == Type::string ? string_type.id() : h5::native(type);
  }
  void track() {
    len = h5::length(dset.id());
    space = h5::simple_space(len);
  }
  void grow_to(std::int64_t n) {
    h5::set_length(dset.id(), n);
    h5::resize_space(space.id(), n);
    len = n;
  }
  // Writes count elements at start; `one` is a reusable 1-element memory space.
  void put(hid_t one, hid_t mtype, std::int64_t start, std::int64_t count, const void* data) const {
    const Handle mem = count == 1 ? Handle{} : h5::simple_space(count);
    h5::write_selected(dset.id(), mtype, space.id(), count == 1 ? one : mem.id(), start, count,
                       data);
  }
};

Dataset open_column(hid_t group, const std::string& name, hid_t dapl) {
  Dataset d;
  d.dset = h5::open_dataset(group, name, dapl);
  d.type = h5::type_of_dataset(d.dset.id(), &d.width);
  if (d.type == Type::string) d.string_type = h5::string_type(d.width);
  return d;
}

void write_values(const Dataset& d, hid_t one, std::int64_t start,
                  const std::vector<Value>& values) {
  const std::vector<char> buf = pack(d.type, d.width, values);
  d.put(one, d.mem_type(), start, static_cast<std::int64_t>(values.size()), buf.data());
}

std::vector<std::int64_t> read_ints(const Dataset& d, std::int64_t start, std::int64_t n) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)));
  h5::read_rows(d.dset.id(), H5T_NATIVE_INT64, start, n, out.data());
  return out;
}

std::vector<double> read_doubles(const Dataset& d, std::int64_t n) {
  std::vector<double> out(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)));
  h5::read_rows(d.dset.id(), H5T_NATIVE_DOUBLE, 0, n, out.data());
  return out;
}

std::vector<std::string> read_strings(const Dataset& d, std::int64_t start, std::int64_t n) {
  const std::size_t es = elem_size(Type::string, d.width);
  std::vector<char> buf(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)) * es);
  h5::read_rows(d.dset.id(), d.string_type.id(), start, n, buf.data());
  std::vector<std::string> out;
  out.reserve(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)));
  for (std::int64_t i = 0; i < n; ++i)
    out.push_back(h5::unpack_string(buf.data() + static_cast<std::size_t>(i) * es, es));
  return out;
}

// --- attributes ------------------------------------------------------------------------------

template <class Rec>
void write_attrs(hid_t loc, const std::vector<schema::Column<Rec>>& table, const Rec& rec) {
  for (const auto& c : table) {
    const std::string name(c.name);
    const Value v = c.get(rec);
    // Optional attributes (spec_history) exist only once they have a value.
    if (name == "spec_history" && std::get<std::string>(v).empty()) continue;
    std::visit([&](const auto& x) { h5::write_attr(loc, name, x); }, v);
  }
}

// Missing attributes keep their defaults, so that files of older tool versions stay readable.
template <class Rec>
Rec read_attrs(hid_t loc, const std::vector<schema::Column<Rec>>& table) {
  Rec rec;
  for (const auto& c : table) {
    const std::string name(c.name);
    if (!h5::has_attr(loc, name)) continue;
    switch (c.type) {
      case Type::string:
        c.set(rec, h5::read_attr_string(loc, name));
        break;
      case Type::int64:
        c.set(rec, h5::read_attr_int(loc, name));
        break;
      case Type::float64:
        c.set(rec, h5::read_attr_double(loc, name));
        break;
    }
  }
  return rec;
}

// Checks the schema attribute and reads the root and /system attributes.
void read_context(const fs::path& path, hid_t file, FileMeta& meta, SystemInfo& system) {
  if (!h5::has_attr(file, "schema")) not_results(path, "no 'schema' attribute");
  const std::string schema = h5::read_attr_string(file, "schema");
  if (schema != kSchema) not_results(path, fmt::format("schema '{}'", schema));
  meta = read_attrs(file, schema::meta());
  if (h5::exists(file, kSystem)) {
    const Handle g = h5::open_group(file, kSystem);
    system = read_attrs(g.id(), schema::system());
  }
}

// Small tables (/hosts, /jobs): rewritten whole, only before SWMR writing starts.
template <class Rec>
void write_table(hid_t file, const char* group, const std::vector<schema::Column<Rec>>& table,
                 const std::vector<Rec>& rows) {
  if (!h5::exists(file, group)) {
    const Handle g = h5::create_group(file, group);
    for (const auto& c : table) h5::create_column(g.id(), std::string(c.name), c.type, c.width);
  }
  const Handle g = h5::open_group(file, group);
  const auto n = static_cast<std::int64_t>(rows.size());
  for (const auto& c : table) {
    Dataset d = open_column(g.id(), std::string(c.name), H5P_DEFAULT);
    h5::set_length(d.dset.id(), n);
    if (n == 0) continue;
    std::vector<Value> values;
    for (const auto& r : rows) values.push_back(c.get(r));
    const std::vector<char> buf = pack(d.type, d.width, values);
    h5::write_rows(d.dset.id(), d.mem_type(), 0, n, buf.data());
  }
}

// Rows of a small table; empty when the group (or one of its columns) predates this version.
template <class Rec>
std::vector<Rec> read_table(hid_t file, const char* group,
                            const std::vector<schema::Column<Rec>>& table, bool swmr) {
  std::vector<Rec> out;
  if (!h5::exists(file, group)) return out;
  const Handle g = h5::open_group(file, group);
  std::int64_t n = std::numeric_limits<std::int64_t>::max();
  std::vector<Dataset> cols;
  for (const auto& c : table) {
    const std::string name(c.name);
    if (!h5::exists(g.id(), name)) return out;
    cols.push_back(open_column(g.id(), name, H5P_DEFAULT));
    if (swmr) h5::refresh(cols.back().dset.id());
    n = std::min(n, h5::length(cols.back().dset.id()));
  }
  out.resize(static_cast<std::size_t>(n));
  for (std::size_t k = 0; k < cols.size(); ++k) {
    const auto& c = table[k];
    const Dataset& d = cols[k];
    for (std::int64_t i = 0; i < n; ++i) {
      auto& r = out[static_cast<std::size_t>(i)];
      if (d.type == Type::string) {
        c.set(r, read_strings(d, i, 1).front());
      } else if (d.type == Type::int64) {
        c.set(r, read_ints(d, i, 1).front());
      } else {
        double v = 0;
        h5::read_rows(d.dset.id(), H5T_NATIVE_DOUBLE, i, 1, &v);
        c.set(r, v);
      }
    }
  }
  return out;
}

void write_hosts(hid_t file, const std::vector<HostInfo>& hosts) {
  write_table(file, kHosts, schema::hosts(), hosts);
}
std::vector<HostInfo> read_hosts(hid_t file, bool swmr) {
  return read_table(file, kHosts, schema::hosts(), swmr);
}
// A session inside a batch job adds its row to /jobs.
void append_job(hid_t file, const std::optional<JobInfo>& job) {
  if (!job) return;
  auto jobs = read_table(file, kJobs, schema::jobs(), false);
  jobs.push_back(*job);
  write_table(file, kJobs, schema::jobs(), jobs);
}

// Known hosts are updated (peaks may have been re-measured), new ones appended.
std::vector<HostInfo> merge_hosts(std::vector<HostInfo> stored, const std::vector<HostInfo>& now) {
  for (const auto& h : now) {
    auto it = std::find_if(stored.begin(), stored.end(),
                           [&](const HostInfo& s) { return s.hostname == h.hostname; });
    if (it == stored.end()) {
      stored.push_back(h);
    } else {
      const std::string first = it->first_seen_utc;
      *it = h;
      if (!first.empty()) it->first_seen_utc = first;
    }
  }
  return stored;
}

// Opens read-only: SWMR-read first (works for files a writer holds or left flagged, and for
// closed files of this format), plain read-only for files written without SWMR support.
Handle open_read_only(const fs::path& path, bool* swmr) {
  if (!fs::exists(path)) throw StoreError(fmt::format("{}: no such file", path.string()));
  if (!h5::is_hdf5(path.string())) not_results(path, "not an HDF5 file");
  // No HDF5 file lock: a reader's shared lock would keep a resuming writer out ("unable to lock
  // file"), and this reader needs no protection from a writer, which only appends under SWMR.
  Handle fapl = h5::file_access(/*latest_format=*/false, /*clear_status_flags=*/false);
  h5::check_ok(H5Pset_file_locking(fapl.id(), false, true), "H5Pset_file_locking");
  try {
    Handle f = h5::open_file(path.string(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl.id());
    if (swmr != nullptr) *swmr = true;
    return f;
  } catch (const h5::Error&) {
  }
  if (swmr != nullptr) *swmr = false;
  return h5::open_file(path.string(), H5F_ACC_RDONLY, fapl.id());
}

// Trailing rows whose config_id was never written (zero-filled by a kill between extension and
// write) are not rows.
std::int64_t drop_unwritten_tail(const Dataset& config_id, std::int64_t n) {
  while (n > 0 && read_strings(config_id, n - 1, 1).front().empty()) --n;
  return n;
}

// An open-file-description lock on the results file marks a live writer. The kernel drops it
// when the writer exits or is killed, which is what lets open() tell a killed writer (clear the
// SWMR flags and resume) from a live one (refuse: two writers would corrupt the file). HDF5's own
// lock cannot do this: a SWMR writer releases it in H5Fstart_swmr_write.
class WriterLock {
 public:
  WriterLock() = default;
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;
  WriterLock(WriterLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  WriterLock& operator=(WriterLock&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  ~WriterLock() {
    if (fd_ >= 0) ::close(fd_);
  }

  static bool held_elsewhere(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    const bool held = ::fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    ::close(fd);
    return held;
  }

  // Takes the lock; throws if another writer holds it. Filesystems without OFD locks (some
  // network filesystems) are not protected, which is no worse than HDF5 itself.
  void acquire(const fs::path& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd_ < 0) return;
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd_, F_OFD_SETLK, &fl) == 0) return;
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (err == EAGAIN || err == EACCES) throw_busy(path);
  }

  [[noreturn]] static void throw_busy(const fs::path& path) {
    throw StoreError(
        fmt::format("{} is being written by another live process; refusing to open it "
                    "for writing",
                    path.string()));
  }

 private:
  int fd_ = -1;
};

}  // namespace

// ===== writer =================================================================================

struct ResultsWriter::Impl {
  fs::path path;
  FileMeta meta;
  SystemInfo system;
  std::map<std::string, RowState> rows;
  std::vector<HostInfo> hosts;
  WriterLock lock;  // declared before file: released only after the file is closed
  Handle file;
  Handle writer_dapl;
  Handle one;                 // 1-element memory space for per-row writes
  std::vector<Dataset> runs;  // parallel to schema::runs()
  std::size_t config_id_col = 0, status_col = 0;
  Dataset sample_row, sample_time;
  Dataset op_row;
  std::vector<Dataset> ops;  // parallel to schema::ops()
  std::int64_t n_runs = 0, n_samples = 0, n_ops = 0;

  ~Impl() {
    // Datasets first, so that the file really closes (and clears its SWMR flags) here.
    runs.clear();
    ops.clear();
    sample_row = {};
    sample_time = {};
    op_row = {};
    file.reset();
  }

  void close_datasets() {
    runs.clear();
    ops.clear();
    sample_row = {};
    sample_time = {};
    op_row = {};
  }

  // Columns of /runs that the file predates (kAddedColumns) are created on reopening it, as long
  // as its other columns: the earlier rows read as the fill value (NaN) and a resumed sweep
  // writes the column from then on. Only before SWMR writing (it adds objects).
  void add_new_columns() {
    const Handle g = h5::open_group(file.id(), kRuns);
    if (!h5::exists(g.id(), "config_id")) return;  // open_datasets says what is wrong
    const std::int64_t n = h5::length(open_column(g.id(), "config_id", H5P_DEFAULT).dset.id());
    for (const auto& c : schema::runs()) {
      if (std::find(kAddedColumns.begin(), kAddedColumns.end(), c.name) == kAddedColumns.end())
        continue;
      const std::string name(c.name);
      if (!h5::exists(g.id(), name))
        h5::set_length(h5::create_column(g.id(), name, c.type, c.width).id(), n);
    }
  }

  void open_datasets(hid_t dapl) {
    const Handle g_runs = h5::open_group(file.id(), kRuns);
    runs.clear();
    for (std::size_t i = 0; i < schema::runs().size(); ++i) {
      const auto& c = schema::runs()[i];
      const std::string name(c.name);
      if (!h5::exists(g_runs.id(), name))
        not_results(path, fmt::format("no column /runs/{}", name));
      runs.push_back(open_column(g_runs.id(), name, dapl));
      runs.back().chunk_rows = h5::chunk_rows(runs.back().dset.id());
      if (runs.back().type != c.type)
        not_results(path, fmt::format("column /runs/{} has another type", name));
      if (c.name == "config_id") config_id_col = i;
      if (c.name == "status") status_col = i;
    }
    const Handle g_samples = h5::open_group(file.id(), kSamples);
    sample_row = open_column(g_samples.id(), kRow, dapl);
    sample_time = open_column(g_samples.id(), kSampleTime, dapl);
    const Handle g_ops = h5::open_group(file.id(), kOps);
    op_row = open_column(g_ops.id(), kRow, dapl);
    ops.clear();
    for (const auto& c : schema::ops())
      ops.push_back(open_column(g_ops.id(), std::string(c.name), dapl));
  }

  // Switches to SWMR writing: H5Fstart_swmr_write wants no open objects, so close, switch, and
  // reopen the datasets with the chunk cache disabled (raw data goes straight to the file).
  void start_swmr() {
    close_datasets();
    h5::start_swmr_write(file.id());
    writer_dapl = h5::create_plist(H5P_DATASET_ACCESS);
    h5::check_ok(H5Pset_chunk_cache(writer_dapl.id(), H5D_CHUNK_CACHE_NSLOTS_DEFAULT, 0,
                                    H5D_CHUNK_CACHE_W0_DEFAULT),
                 "H5Pset_chunk_cache");
    open_datasets(writer_dapl.id());
    for (auto& d : runs) d.track();
    for (auto& d : ops) d.track();
    sample_row.track();
    sample_time.track();
    op_row.track();
    one = h5::simple_space(1);
    h5::flush(file.id());
  }

  // Resume after a clean close or a kill: bring every group back to a consistent length.
  void recover() {
    std::int64_t n = std::numeric_limits<std::int64_t>::max();
    for (const auto& d : runs) n = std::min(n, h5::length(d.dset.id()));
    n = drop_unwritten_tail(runs[config_id_col], n);
    for (const auto& d : runs)
      if (h5::length(d.dset.id()) != n) h5::set_length(d.dset.id(), n);
    n_runs = n;

    const auto ids = read_strings(runs[config_id_col], 0, n);
    const auto statuses = read_strings(runs[status_col], 0, n);
    rows.clear();
    for (std::int64_t i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
      rows.try_emplace(ids[k], RowState{i, statuses[k]});
    }

    // Samples/ops of a record whose /runs row never landed point at row >= n: drop them (they
    // are the tail, written last).
    auto trim_group = [&](Dataset& row_col, std::vector<Dataset*> cols) {
      std::int64_t m = h5::length(row_col.dset.id());
      for (const Dataset* d : cols) m = std::min(m, h5::length(d->dset.id()));
      const auto row_of = read_ints(row_col, 0, m);
      while (m > 0 && (row_of[static_cast<std::size_t>(m - 1)] >= n ||
                       row_of[static_cast<std::size_t>(m - 1)] < 0))
        --m;
      cols.push_back(&row_col);
      for (Dataset* d : cols)
        if (h5::length(d->dset.id()) != m) h5::set_length(d->dset.id(), m);
      return m;
    };
    n_samples = trim_group(sample_row, {&sample_time});
    std::vector<Dataset*> op_cols;
    for (auto& d : ops) op_cols.push_back(&d);
    n_ops = trim_group(op_row, op_cols);
  }

  void write_many(std::span<const RunRecord> records) {
    if (records.empty()) return;
    // Row of each record: its existing row (a retry), or the next new one.
    std::vector<std::string> ids;
    std::vector<std::int64_t> row_of;
    std::map<std::string, std::int64_t> new_rows;
    std::int64_t n_new = 0;
    for (const auto& r : records) {
      ids.push_back(schema::config_id_of(r));
      if (auto f = rows.find(ids.back()); f != rows.end()) {
        row_of.push_back(f->second.row);
      } else if (auto g = new_rows.find(ids.back()); g != new_rows.end()) {
        row_of.push_back(g->second);  // twice in one batch: the later one overwrites
      } else {
        new_rows[ids.back()] = n_runs + n_new;
        row_of.push_back(n_runs + n_new++);
      }
    }

    // Samples and ops first: a /runs row never exists without them.
    std::vector<double> times;
    std::vector<std::int64_t> sample_rows;
    std::vector<const OpRecord*> all_ops;
    std::vector<std::int64_t> op_rows;
    for (std::size_t i = 0; i < records.size(); ++i) {
      times.insert(times.end(), records[i].samples.begin(), records[i].samples.end());
      sample_rows.insert(sample_rows.end(), records[i].samples.size(), row_of[i]);
      for (const auto& o : records[i].ops) all_ops.push_back(&o);
      op_rows.insert(op_rows.end(), records[i].ops.size(), row_of[i]);
    }
    if (!times.empty()) {
      const auto k = static_cast<std::int64_t>(times.size());
      sample_time.grow_to(n_samples + k);
      sample_row.grow_to(n_samples + k);
      sample_time.put(one.id(), H5T_NATIVE_DOUBLE, n_samples, k, times.data());
      sample_row.put(one.id(), H5T_NATIVE_INT64, n_samples, k, sample_rows.data());
    }
    if (!all_ops.empty()) {
      const auto k = static_cast<std::int64_t>(all_ops.size());
      for (std::size_t c = 0; c < ops.size(); ++c) {
        std::vector<Value> values;
        values.reserve(all_ops.size());
        for (const auto* o : all_ops) values.push_back(schema::ops()[c].get(*o));
        ops[c].grow_to(n_ops + k);
        write_values(ops[c], one.id(), n_ops, values);
      }
      op_row.grow_to(n_ops + k);
      op_row.put(one.id(), H5T_NATIVE_INT64, n_ops, k, op_rows.data());
    }

    // HDF5 flushes metadata in no particular order across datasets: without this, a kill could
    // leave the grown /runs extents on disk but not the grown samples/ops extents.
    if (!times.empty()) {
      h5::flush_dataset(sample_time.dset.id());
      h5::flush_dataset(sample_row.dset.id());
    }
    if (!all_ops.empty()) {
      for (const auto& d : ops) h5::flush_dataset(d.dset.id());
      h5::flush_dataset(op_row.dset.id());
    }

    // Then /runs: grow every column, fill the new rows as one block (and overwrite retried rows
    // in place), status second to last: a retried row that a kill interrupts keeps its old status
    // (it is still a failure to retry, never an "ok" row with the old record's blanks). Before
    // config_id, which makes new rows count (a reader treats trailing rows whose config_id is
    // still empty as not yet written), columns that allocated a chunk are flushed: HDF5 writes
    // the metadata of different datasets in no particular order, and a new row must not become
    // visible while a column's new chunk is still unknown on disk.
    if (n_new > 0)
      for (auto& d : runs) d.grow_to(n_runs + n_new);
    auto write_column = [&](std::size_t c) {
      std::vector<Value> block(static_cast<std::size_t>(n_new));
      for (std::size_t i = 0; i < records.size(); ++i) {
        Value v = c == config_id_col ? Value(ids[i]) : schema::runs()[c].get(records[i]);
        if (row_of[i] >= n_runs) {
          block[static_cast<std::size_t>(row_of[i] - n_runs)] = std::move(v);
        } else {
          write_values(runs[c], one.id(), row_of[i], {std::move(v)});
        }
      }
      if (n_new > 0) write_values(runs[c], one.id(), n_runs, block);
    };
    for (std::size_t c = 0; c < runs.size(); ++c)
      if (c != config_id_col && c != status_col) write_column(c);
    write_column(status_col);
    // Only a column whose new rows reached a new chunk has such metadata (its chunk index) to
    // flush; an extent that lags only drops the unfinished row (the shortest column decides).
    const auto chunks = [](const Dataset& d, std::int64_t n) {
      return (n + d.chunk_rows - 1) / d.chunk_rows;
    };
    if (n_new > 0)
      for (std::size_t c = 0; c < runs.size(); ++c)
        if (c != config_id_col && chunks(runs[c], n_runs + n_new) != chunks(runs[c], n_runs))
          h5::flush_dataset(runs[c].dset.id());
    write_column(config_id_col);
    h5::flush(file.id());

    n_samples += static_cast<std::int64_t>(times.size());
    n_ops += static_cast<std::int64_t>(all_ops.size());
    n_runs += n_new;
    for (std::size_t i = 0; i < records.size(); ++i)
      rows[ids[i]] = RowState{row_of[i], records[i].status};
  }
};

ResultsWriter ResultsWriter::create(const fs::path& path, const FileMeta& meta,
                                    const SystemInfo& system, const std::vector<HostInfo>& hosts,
                                    const std::optional<JobInfo>& job) {
  if (fs::exists(path))
    throw StoreError(fmt::format("{}: already exists; not overwriting it", path.string()));
  return guarded(path, [&] {
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    impl->meta = meta;
    impl->meta.schema = kSchema;
    impl->system = system;
    impl->hosts = hosts;
    const Handle fapl = h5::file_access(/*latest_format=*/true, /*clear_status_flags=*/false);
    impl->file = h5::create_file(path.string(), fapl.id());
    const hid_t f = impl->file.id();
    write_attrs(f, schema::meta(), impl->meta);
    write_hosts(f, hosts);
    append_job(f, job);
    {
      const Handle g = h5::create_group(f, kSystem);
      write_attrs(g.id(), schema::system(), system);
    }
    {
      const Handle g = h5::create_group(f, kRuns);
      for (const auto& c : schema::runs())
        h5::create_column(g.id(), std::string(c.name), c.type, c.width);
    }
    {
      const Handle g = h5::create_group(f, kSamples);
      h5::create_column(g.id(), kRow, Type::int64, 0);
      h5::create_column(g.id(), kSampleTime, Type::float64, 0);
    }
    {
      const Handle g = h5::create_group(f, kOps);
      h5::create_column(g.id(), kRow, Type::int64, 0);
      for (const auto& c : schema::ops())
        h5::create_column(g.id(), std::string(c.name), c.type, c.width);
    }
    impl->start_swmr();
    impl->lock.acquire(path);
    return ResultsWriter(std::move(impl));
  });
}

ResultsWriter ResultsWriter::open(const fs::path& path) {
  return open(path, OpenOptions{});
}

bool ResultsWriter::is_being_written(const fs::path& path) {
  return WriterLock::held_elsewhere(path);
}

ResultsWriter ResultsWriter::open(const fs::path& path, const OpenOptions& options) {
  return guarded(path, [&] {
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    if (WriterLock::held_elsewhere(path)) WriterLock::throw_busy(path);
    {
      // Validate read-only first, so a foreign HDF5 file is never opened for writing.
      const Handle f = open_read_only(path, nullptr);
      read_context(path, f.id(), impl->meta, impl->system);
    }
    // A killed SWMR writer leaves the superblock flagged "open for write"; plain H5Fopen then
    // refuses ("file is already open for write"). Clear the flags the way h5clear does.
    const Handle fapl = h5::file_access(/*latest_format=*/true, /*clear_status_flags=*/true);
    impl->file = h5::open_file(path.string(), H5F_ACC_RDWR, fapl.id());
    h5::raise_eoa_to_eof(impl->file.id());
    impl->add_new_columns();
    impl->open_datasets(H5P_DEFAULT);
    impl->recover();
    // Changes to attributes and /hosts are only possible before SWMR writing starts.
    const hid_t f = impl->file.id();
    if (options.extend_with) {
      nlohmann::json history = nlohmann::json::array();
      if (!impl->meta.spec_history.empty()) {
        history = nlohmann::json::parse(impl->meta.spec_history, nullptr, false);
        if (!history.is_array()) history = nlohmann::json::array();
      }
      if (history.empty()) {
        history.push_back({{"name", impl->meta.spec_name},
                           {"sha256", impl->meta.spec_sha256},
                           {"yaml", impl->meta.spec_yaml},
                           {"applied_utc", impl->meta.created_utc},
                           {"tool_version", impl->meta.tool_version}});
      }
      const FileMeta& x = *options.extend_with;
      history.push_back({{"name", x.spec_name},
                         {"sha256", x.spec_sha256},
                         {"yaml", x.spec_yaml},
                         {"applied_utc", x.created_utc},
                         {"tool_version", x.tool_version}});
      impl->meta.spec_name = x.spec_name;
      impl->meta.spec_sha256 = x.spec_sha256;
      impl->meta.spec_yaml = x.spec_yaml;
      impl->meta.spec_history = history.dump();
      for (const char* name : {"spec_name", "spec_sha256", "spec_yaml", "spec_history"}) {
        if (h5::has_attr(f, name)) h5::delete_attr(f, name);
      }
      h5::write_attr(f, "spec_name", impl->meta.spec_name);
      h5::write_attr(f, "spec_sha256", impl->meta.spec_sha256);
      h5::write_attr(f, "spec_yaml", impl->meta.spec_yaml);
      h5::write_attr(f, "spec_history", impl->meta.spec_history);
    }
    impl->hosts = merge_hosts(read_hosts(f, false), options.hosts);
    if (!options.hosts.empty() || !h5::exists(f, kHosts)) write_hosts(f, impl->hosts);
    append_job(f, options.job);
    impl->start_swmr();
    impl->lock.acquire(path);
    return ResultsWriter(std::move(impl));
  });
}

ResultsWriter::ResultsWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ResultsWriter::ResultsWriter(ResultsWriter&&) noexcept = default;
ResultsWriter& ResultsWriter::operator=(ResultsWriter&&) noexcept = default;
ResultsWriter::~ResultsWriter() = default;

const FileMeta& ResultsWriter::meta() const {
  return impl_->meta;
}
const SystemInfo& ResultsWriter::system() const {
  return impl_->system;
}
const std::map<std::string, RowState>& ResultsWriter::rows() const {
  return impl_->rows;
}

const std::vector<HostInfo>& ResultsWriter::hosts() const {
  return impl_->hosts;
}

void ResultsWriter::write(const RunRecord& record) {
  guarded(impl_->path, [&] { impl_->write_many(std::span<const RunRecord>(&record, 1)); });
}

void ResultsWriter::write_many(std::span<const RunRecord> records) {
  guarded(impl_->path, [&] { impl_->write_many(records); });
}

// ===== reader =================================================================================

struct ResultsReader::Impl {
  fs::path path;
  Handle file;
  bool swmr = false;
  FileMeta meta;
  SystemInfo system;
  std::int64_t n_runs = 0;
  std::map<std::string, std::int64_t> n_group;  // samples / ops: entries visible at snapshot

  [[nodiscard]] Handle group(const std::string& name) const {
    if (name != kRuns && name != kSamples && name != kOps)
      throw StoreError(
          fmt::format("{}: no group '{}' (runs, samples or ops)", path.string(), name));
    return h5::open_group(file.id(), name);
  }

  [[nodiscard]] Dataset column(const std::string& grp, const std::string& name) const {
    const Handle g = group(grp);
    if (!h5::exists(g.id(), name))
      throw StoreError(fmt::format("{}: no column /{}/{}", path.string(), grp, name));
    Dataset d = open_column(g.id(), name, H5P_DEFAULT);
    // Under SWMR the cached extent and chunk index may predate the writer's last flush.
    if (swmr) h5::refresh(d.dset.id());
    return d;
  }

  [[nodiscard]] std::int64_t min_length(const std::string& grp) const {
    const Handle g = group(grp);
    std::int64_t n = std::numeric_limits<std::int64_t>::max();
    for (const auto& name : h5::list(g.id())) {
      Dataset d = open_column(g.id(), name, H5P_DEFAULT);
      if (swmr) h5::refresh(d.dset.id());
      n = std::min(n, h5::length(d.dset.id()));
    }
    return n == std::numeric_limits<std::int64_t>::max() ? 0 : n;
  }

  void snapshot() {
    n_runs = min_length(kRuns);
    const Handle g = group(kRuns);
    if (h5::exists(g.id(), "config_id"))
      n_runs = drop_unwritten_tail(column(kRuns, "config_id"), n_runs);
    n_group[kSamples] = min_length(kSamples);
    n_group[kOps] = min_length(kOps);
  }

  [[nodiscard]] std::int64_t rows_of(const std::string& grp) const {
    return grp == kRuns ? n_runs : n_group.at(grp);
  }

  [[nodiscard]] std::vector<double> doubles(const std::string& grp, const std::string& name) const {
    const Dataset d = column(grp, name);
    if (d.type == Type::string)
      throw StoreError(
          fmt::format("{}: column /{}/{} holds strings, not numbers", path.string(), grp, name));
    return read_doubles(d, rows_of(grp));
  }

  [[nodiscard]] std::vector<std::int64_t> ints(const std::string& grp,
                                               const std::string& name) const {
    const Dataset d = column(grp, name);
    if (d.type != Type::int64)
      throw StoreError(
          fmt::format("{}: column /{}/{} is not an integer column", path.string(), grp, name));
    return read_ints(d, 0, rows_of(grp));
  }

  [[nodiscard]] std::vector<std::string> strings(const std::string& grp,
                                                 const std::string& name) const {
    const Dataset d = column(grp, name);
    if (d.type != Type::string)
      throw StoreError(
          fmt::format("{}: column /{}/{} is not a string column", path.string(), grp, name));
    return read_strings(d, 0, rows_of(grp));
  }
};

ResultsReader::ResultsReader(const fs::path& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  guarded(path, [&] {
    impl_->file = open_read_only(path, &impl_->swmr);
    read_context(path, impl_->file.id(), impl_->meta, impl_->system);
    for (const char* g : {kRuns, kSamples, kOps})
      if (!h5::exists(impl_->file.id(), g)) not_results(path, fmt::format("no group /{}", g));
    impl_->snapshot();
  });
}

ResultsReader::ResultsReader(ResultsReader&&) noexcept = default;
ResultsReader& ResultsReader::operator=(ResultsReader&&) noexcept = default;
ResultsReader::~ResultsReader() = default;

const FileMeta& ResultsReader::meta() const {
  return impl_->meta;
}
const SystemInfo& ResultsReader::system() const {
  return impl_->system;
}
std::vector<HostInfo> ResultsReader::hosts() const {
  return guarded(impl_->path, [&] { return read_hosts(impl_->file.id(), impl_->swmr); });
}
std::vector<JobInfo> ResultsReader::jobs() const {
  return guarded(impl_->path,
                 [&] { return read_table(impl_->file.id(), kJobs, schema::jobs(), impl_->swmr); });
}

std::int64_t ResultsReader::rows() const {
  return impl_->n_runs;
}
bool ResultsReader::swmr() const {
  return impl_->swmr;
}

void ResultsReader::refresh() {
  guarded(impl_->path, [&] { impl_->snapshot(); });
}

bool ResultsReader::has_column(const std::string& name) const {
  return guarded(impl_->path, [&] {
    const Handle g = impl_->group(kRuns);
    return h5::exists(g.id(), name);
  });
}

std::vector<std::string> ResultsReader::columns() const {
  return guarded(impl_->path, [&] {
    const Handle g = impl_->group(kRuns);
    return h5::list(g.id());
  });
}

std::vector<double> ResultsReader::read_double(const std::string& column) const {
  return guarded(impl_->path, [&] { return impl_->doubles(kRuns, column); });
}
std::vector<std::int64_t> ResultsReader::read_int(const std::string& column) const {
  return guarded(impl_->path, [&] { return impl_->ints(kRuns, column); });
}
std::vector<std::string> ResultsReader::read_string(const std::string& column) const {
  return guarded(impl_->path, [&] { return impl_->strings(kRuns, column); });
}

std::int64_t ResultsReader::group_rows(const std::string& group) const {
  return guarded(impl_->path, [&] {
    const Handle g = impl_->group(group);  // validates the name
    return impl_->rows_of(group);
  });
}
std::vector<double> ResultsReader::read_group_double(const std::string& group,
                                                     const std::string& column) const {
  return guarded(impl_->path, [&] { return impl_->doubles(group, column); });
}
std::vector<std::int64_t> ResultsReader::read_group_int(const std::string& group,
                                                        const std::string& column) const {
  return guarded(impl_->path, [&] { return impl_->ints(group, column); });
}
std::vector<std::string> ResultsReader::read_group_string(const std::string& group,
                                                          const std::string& column) const {
  return guarded(impl_->path, [&] { return impl_->strings(group, column); });
}

std::vector<RunRecord> ResultsReader::read_records() const {
  return guarded(impl_->path, [&] {
    const Impl& m = *impl_;
    const auto n = static_cast<std::size_t>(m.n_runs);
    std::vector<RunRecord> out(n);
    const Handle g = m.group(kRuns);
    for (const auto& c : schema::runs()) {
      const std::string name(c.name);
      if (!h5::exists(g.id(), name)) continue;  // a column this file predates: keep the default
      std::vector<Value> values;
      if (c.type == Type::string) {
        for (auto& s : m.strings(kRuns, name)) values.emplace_back(std::move(s));
      } else if (c.type == Type::int64) {
        for (auto v : m.ints(kRuns, name)) values.emplace_back(v);
      } else {
        for (auto v : m.doubles(kRuns, name)) values.emplace_back(v);
      }
      for (std::size_t i = 0; i < n; ++i) {
        try {
          c.set(out[i], std::move(values[i]));
        } catch (const std::exception& e) {
          throw StoreError(
              fmt::format("{}: /runs/{} row {}: {}", m.path.string(), name, i, e.what()));
        }
      }
    }
    const auto sample_rows = m.ints(kSamples, kRow);
    const auto sample_times = m.doubles(kSamples, kSampleTime);
    for (std::size_t i = 0; i < sample_rows.size(); ++i) {
      const auto row = sample_rows[i];
      if (row >= 0 && static_cast<std::size_t>(row) < n)
        out[static_cast<std::size_t>(row)].samples.push_back(sample_times[i]);
    }
    const auto op_rows = m.ints(kOps, kRow);
    std::vector<OpRecord> ops(op_rows.size());
    for (const auto& c : schema::ops()) {
      const std::string name(c.name);
      std::vector<Value> values;
      if (c.type == Type::string) {
        for (auto& s : m.strings(kOps, name)) values.emplace_back(std::move(s));
      } else if (c.type == Type::int64) {
        for (auto v : m.ints(kOps, name)) values.emplace_back(v);
      } else {
        for (auto v : m.doubles(kOps, name)) values.emplace_back(v);
      }
      for (std::size_t i = 0; i < ops.size(); ++i) c.set(ops[i], std::move(values[i]));
    }
    for (std::size_t i = 0; i < ops.size(); ++i) {
      const auto row = op_rows[i];
      if (row >= 0 && static_cast<std::size_t>(row) < n)
        out[static_cast<std::size_t>(row)].ops.push_back(std::move(ops[i]));
    }
    return out;
  });
}

}  // namespace dnnscape::store
