// The HDF5 results file, schema dnnscape/1: writer (append-only, crash-safe, SWMR) and reader.
// HDF5 includes stay in store/*.cpp; users of this header never see hid_t.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "store/record.hpp"

namespace dnnscape::store {

// Any failure of the HDF5 library or of the file's schema, with HDF5's own error text appended.
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RowState {
  std::int64_t row = -1;
  std::string status;
};

// What open() may change before SWMR writing starts (afterwards only rows are appended).
struct OpenOptions {
  // The spec grew (--extend): its root attributes replace the stored ones, and spec_history
  // keeps the original spec and every extension.
  std::optional<FileMeta> extend_with;
  // Hosts of this session: new ones are added to /hosts, known ones get their peaks and worker
  // count updated.
  std::vector<HostInfo> hosts;
  // The batch job this session runs in (nothing outside one): appended to /jobs.
  std::optional<JobInfo> job;
};

// Single writer of a results file. Every append is durable when it returns: a kill -9 afterwards
// leaves a file that opens (h5py: swmr=True while flagged open) and holds the row.
class ResultsWriter {
 public:
  // Creates a new file; throws StoreError if it exists.
  static ResultsWriter create(const std::filesystem::path& path, const FileMeta& meta,
                              const SystemInfo& system, const std::vector<HostInfo>& hosts = {},
                              const std::optional<JobInfo>& job = {});
  // Opens an existing file for appending (resume), clearing the "open for write" flags left by a
  // killed writer. Throws StoreError if it is not a dnnscape/1 file.
  static ResultsWriter open(const std::filesystem::path& path);
  static ResultsWriter open(const std::filesystem::path& path, const OpenOptions& options);
  // True while a live process holds the file open for writing (its writer lock).
  static bool is_being_written(const std::filesystem::path& path);

  ResultsWriter(ResultsWriter&&) noexcept;
  ResultsWriter& operator=(ResultsWriter&&) noexcept;
  ~ResultsWriter();

  [[nodiscard]] const FileMeta& meta() const;
  [[nodiscard]] const SystemInfo& system() const;
  // config_id -> row index and status of every row in /runs.
  [[nodiscard]] const std::map<std::string, RowState>& rows() const;
  [[nodiscard]] const std::vector<HostInfo>& hosts() const;

  // Appends the record as a new row, or overwrites the row that holds the same config_id (a
  // retried failure); its samples and ops are appended pointing at that row. Flushed on return.
  void write(const RunRecord& record);
  // The same for many records with one flush: every record's samples and ops first, then all of
  // their /runs rows (config_id last), so a kill leaves whole rows only. Equivalent to write()
  // of each in order, at a fraction of the cost for small records.
  void write_many(std::span<const RunRecord> records);

 private:
  struct Impl;
  explicit ResultsWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Read-only, column-wise access; reads only the columns asked for.
class ResultsReader {
 public:
  explicit ResultsReader(const std::filesystem::path& path);
  ResultsReader(ResultsReader&&) noexcept;
  ResultsReader& operator=(ResultsReader&&) noexcept;
  ~ResultsReader();

  [[nodiscard]] const FileMeta& meta() const;
  [[nodiscard]] const SystemInfo& system() const;
  // Rows of /hosts (empty for files written before it existed).
  [[nodiscard]] std::vector<HostInfo> hosts() const;
  // Rows of /jobs: the batch-job sessions that wrote the file (empty outside batch jobs).
  [[nodiscard]] std::vector<JobInfo> jobs() const;
  // Complete rows of /runs when the reader was opened or last refreshed: the shortest /runs
  // column (a killed writer may leave columns of unequal length). Every read returns this many.
  [[nodiscard]] std::int64_t rows() const;
  // True if opened SWMR-read: always for files of this format (open, killed or closed); plain
  // read-only only for HDF5 files written without SWMR support.
  [[nodiscard]] bool swmr() const;
  // Picks up rows appended by a live writer since the reader opened (SWMR).
  void refresh();
  [[nodiscard]] bool has_column(const std::string& name) const;
  [[nodiscard]] std::vector<std::string> columns() const;
  // Numeric columns (int64 ones are converted; -1 stays -1).
  [[nodiscard]] std::vector<double> read_double(const std::string& column) const;
  [[nodiscard]] std::vector<std::int64_t> read_int(const std::string& column) const;
  [[nodiscard]] std::vector<std::string> read_string(const std::string& column) const;
  // Group /samples or /ops columns: group = "samples" | "ops".
  [[nodiscard]] std::int64_t group_rows(const std::string& group) const;
  [[nodiscard]] std::vector<double> read_group_double(const std::string& group,
                                                      const std::string& column) const;
  [[nodiscard]] std::vector<std::int64_t> read_group_int(const std::string& group,
                                                         const std::string& column) const;
  [[nodiscard]] std::vector<std::string> read_group_string(const std::string& group,
                                                           const std::string& column) const;
  // Every row as a record, with its samples and ops (rows() records, in row order).
  [[nodiscard]] std::vector<RunRecord> read_records() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dnnscape::store
