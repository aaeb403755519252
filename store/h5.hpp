// Checked RAII wrappers of the HDF5 C API used by the results store (internal to store/).
// Every call is wrapped once: a failure throws h5::Error with HDF5's own error text, and every
// hid_t lives in a Handle whose destructor closes it and never throws.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store/results.hpp"
#include "store/schema.hpp"

namespace dnnscape::store::h5 {

// A failed HDF5 call: "<call>: <HDF5 error stack, innermost first>". results.cpp prefixes the
// file name before it reaches users as a StoreError.
class Error : public StoreError {
 public:
  using StoreError::StoreError;
};

// Silences HDF5's automatic printing of error stacks to stderr (once per process).
void quiet_errors();
// The current HDF5 error stack as one line (and clears it).
std::string error_text();
[[noreturn]] void fail(std::string_view call);

inline hid_t check(hid_t id, std::string_view call) {
  if (id < 0) fail(call);
  return id;
}
inline void check_ok(herr_t status, std::string_view call) {
  if (status < 0) fail(call);
}
inline bool check_tri(htri_t t, std::string_view call) {
  if (t < 0) fail(call);
  return t > 0;
}

// Owns one hid_t of any kind; closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), close_(closer) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  ~Handle() { reset(); }

  [[nodiscard]] hid_t id() const { return id_; }
  [[nodiscard]] bool valid() const { return id_ >= 0; }
  // Closes now; a failing close is ignored (nothing useful can be done in a destructor path).
  void reset() noexcept {
    if (id_ >= 0 && close_ != nullptr) {
      close_(id_);
      H5Eclear2(H5E_DEFAULT);
    }
    id_ = H5I_INVALID_HID;
  }
  // Closes now and reports a failure (used for the file, whose close writes metadata).
  void close(std::string_view call);

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

using schema::Type;

// --- property lists --------------------------------------------------------------------------
Handle create_plist(hid_t cls);
// File access: latest format (required for SWMR); optionally the private "clear_status_flags"
// property that h5clear uses to reset the "open for (SWMR) write" superblock flags.
Handle file_access(bool latest_format, bool clear_status_flags);

// --- files -----------------------------------------------------------------------------------
Handle create_file(const std::string& path, hid_t fapl);  // H5F_ACC_EXCL
Handle open_file(const std::string& path, unsigned flags, hid_t fapl);
void start_swmr_write(hid_t file);
void flush(hid_t obj);
void flush_dataset(hid_t dset);  // H5Dflush: its metadata and raw data reach the file now
// Raises the file's end-of-allocation to the end of the file when it lags behind (what
// `h5clear --increment=0` does): a killed writer can leave the superblock's EOA short of chunks
// it had allocated and written, and reads there fail with "addr overflow".
void raise_eoa_to_eof(hid_t file);
// Rows per chunk of a chunked 1-D dataset.
std::int64_t chunk_rows(hid_t dset);
bool is_hdf5(const std::string& path);

// --- groups / links --------------------------------------------------------------------------
Handle create_group(hid_t loc, const std::string& name);
Handle open_group(hid_t loc, const std::string& name);
bool exists(hid_t loc, const std::string& name);
// Names of the links in a group, in creation/name order.
std::vector<std::string> list(hid_t group);

// --- types -----------------------------------------------------------------------------------
// Fixed-length, null-padded ASCII string of `size` bytes (SWMR-safe, unlike variable length).
Handle string_type(std::size_t size);
hid_t native(Type t);  // H5T_NATIVE_INT64 / H5T_NATIVE_DOUBLE (not for strings)
Type type_of_dataset(hid_t dset, std::size_t* string_size);

// --- attributes ------------------------------------------------------------------------------
void write_attr(hid_t loc, const std::string& name, const std::string& value);
void write_attr(hid_t loc, const std::string& name, std::int64_t value);
void write_attr(hid_t loc, const std::string& name, double value);
bool has_attr(hid_t loc, const std::string& name);
void delete_attr(hid_t loc, const std::string& name);
std::string read_attr_string(hid_t loc, const std::string& name);
std::int64_t read_attr_int(hid_t loc, const std::string& name);
double read_attr_double(hid_t loc, const std::string& name);

// --- 1-D extendible datasets -----------------------------------------------------------------
// Chunked, unlimited max dim, length 0; string_size is used for Type::string.
Handle create_column(hid_t group, const std::string& name, Type type, std::size_t string_size);
// dapl may be H5P_DEFAULT.
Handle open_dataset(hid_t loc, const std::string& name, hid_t dapl);
std::int64_t length(hid_t dset);
void set_length(hid_t dset, std::int64_t n);
void refresh(hid_t dset);
// Writes `count` elements of memory type `mem_type` at rows [start, start + count).
void write_rows(hid_t dset, hid_t mem_type, std::int64_t start, std::int64_t count,
                const void* data);
// 1-D dataspace of n elements; resize_space changes n in place (a writer keeps each dataset's file
// space in step with its extent instead of asking H5Dget_space for every row).
Handle simple_space(std::int64_t n);
void resize_space(hid_t space, std::int64_t n);
// As write_rows, with the caller's file space (extent already current) and memory space.
void write_selected(hid_t dset, hid_t mem_type, hid_t file_space, hid_t mem_space,
                    std::int64_t start, std::int64_t count, const void* data);
// Reads rows [start, start + count) converted to mem_type.
void read_rows(hid_t dset, hid_t mem_type, std::int64_t start, std::int64_t count, void* data);

// Copies `value` into a fixed-length field of `size` bytes, zero-padded; longer values are cut
// at a UTF-8 character boundary. Returns false if it had to cut.
bool pack_string(std::string_view value, char* field, std::size_t size);
// The value of a fixed-length field: up to the first NUL.
std::string unpack_string(const char* field, std::size_t size);

}  // namespace dnnscape::store::h5
