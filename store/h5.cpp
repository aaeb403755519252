#include "store/h5.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <mutex>

namespace dnnscape::store::h5 {

namespace {

// Chunks of about 8 KiB: small enough that a file of a few rows stays small, large enough that
// 10^5 rows need few chunk-index entries.
constexpr std::size_t kChunkBytes = 8192;
constexpr hsize_t kMinChunkRows = 16;
constexpr hsize_t kMaxChunkRows = 1024;

herr_t collect(unsigned /*n*/, const H5E_error2_t* e, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  std::string line = e->desc != nullptr ? e->desc : "";
  char minor[256] = {};
  if (H5Eget_msg(e->min_num, nullptr, minor, sizeof minor) > 0 && line.find(minor) == line.npos)
    line += fmt::format(" ({})", minor);
  out->push_back(std::move(line));
  return 0;
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

}  // namespace

void quiet_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

std::string error_text() {
  std::vector<std::string> lines;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect, &lines);
  H5Eclear2(H5E_DEFAULT);
  if (lines.empty()) return "no HDF5 error stack";
  // The outermost entry says what the API call was doing, the innermost why it failed.
  if (lines.size() == 1) return one_line(lines.front());
  return one_line(fmt::format("{}: {}", lines.front(), lines.back()));
}

void fail(std::string_view call) {
  throw Error(fmt::format("{}: {}", call, error_text()));
}

void Handle::close(std::string_view call) {
  if (id_ < 0) return;
  const hid_t id = id_;
  id_ = H5I_INVALID_HID;
  check_ok(close_(id), call);
}

// --- property lists --------------------------------------------------------------------------

Handle create_plist(hid_t cls) {
  return {check(H5Pcreate(cls), "H5Pcreate"), H5Pclose};
}

constexpr hsize_t kPage = 4096;

Handle file_access(bool latest_format, bool clear_status_flags) {
  Handle fapl = create_plist(H5P_FILE_ACCESS);
  if (latest_format) {
    check_ok(H5Pset_libver_bounds(fapl.id(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST),
             "H5Pset_libver_bounds");
    // Every allocation starts on a 4 KiB page. Linux may cut a write short between pages when
    // the writer gets SIGKILL (generic_perform_write checks for a fatal signal per page), and an
    // object header rewritten across a page boundary was then left torn: its checksum failed and
    // the dataset could not be opened again (about 1 kill in 75; 9% of the header writes of an
    // unaligned file straddle a page). Aligned, every metadata entry of at most 4 KiB is written
    // by a single-page write. The price is space: about 0.9 MB per file (1.56 MB against 0.70
    // MB for 250 rows of the store test; 19.0 MB against 17.8 MB for 10,000 rows).
    check_ok(H5Pset_alignment(fapl.id(), 1, kPage), "H5Pset_alignment");
  }
  if (clear_status_flags) {
    // Private property registered in every file-access list (H5Pfapl.c); it is how h5clear
    // resets the superblock status flags that a killed writer leaves set.
    hbool_t clear = true;
    check_ok(H5Pset(fapl.id(), "clear_status_flags", &clear), "H5Pset(clear_status_flags)");
  }
  return fapl;
}

// --- files -----------------------------------------------------------------------------------

Handle create_file(const std::string& path, hid_t fapl) {
  return {check(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl), "H5Fcreate"), H5Fclose};
}

Handle open_file(const std::string& path, unsigned flags, hid_t fapl) {
  return {check(H5Fopen(path.c_str(), flags, fapl), "H5Fopen"), H5Fclose};
}

void start_swmr_write(hid_t file) {
  check_ok(H5Fstart_swmr_write(file), "H5Fstart_swmr_write");
}

void flush(hid_t obj) {
  check_ok(H5Fflush(obj, H5F_SCOPE_LOCAL), "H5Fflush");
}

void flush_dataset(hid_t dset) {
  check_ok(H5Dflush(dset), "H5Dflush");
}

std::int64_t chunk_rows(hid_t dset) {
  const Handle dcpl{check(H5Dget_create_plist(dset), "H5Dget_create_plist"), H5Pclose};
  hsize_t dims[1] = {0};
  if (H5Pget_chunk(dcpl.id(), 1, dims) != 1) throw Error("H5Pget_chunk: not a chunked 1-D dataset");
  return static_cast<std::int64_t>(dims[0]);
}

void raise_eoa_to_eof(hid_t file) {
  // EOA = max(EOA, EOF) + 0: a no-op for a file that was closed cleanly.
  check_ok(H5Fincrement_filesize(file, 0), "H5Fincrement_filesize");
}

bool is_hdf5(const std::string& path) {
  const htri_t t = H5Fis_hdf5(path.c_str());
  H5Eclear2(H5E_DEFAULT);
  return t > 0;
}

// --- groups / links --------------------------------------------------------------------------

Handle create_group(hid_t loc, const std::string& name) {
  // Track creation order so that h5py lists columns in schema order, not alphabetically.
  Handle gcpl = create_plist(H5P_GROUP_CREATE);
  check_ok(H5Pset_link_creation_order(gcpl.id(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
           "H5Pset_link_creation_order");
  return {check(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, gcpl.id(), H5P_DEFAULT),
                fmt::format("H5Gcreate2({})", name)),
          H5Gclose};
}

Handle open_group(hid_t loc, const std::string& name) {
  return {check(H5Gopen2(loc, name.c_str(), H5P_DEFAULT), fmt::format("H5Gopen2({})", name)),
          H5Gclose};
}

bool exists(hid_t loc, const std::string& name) {
  return check_tri(H5Lexists(loc, name.c_str(), H5P_DEFAULT), "H5Lexists");
}

namespace {
herr_t add_name(hid_t, const char* name, const H5L_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> list(hid_t group) {
  std::vector<std::string> names;
  H5_index_t index = H5_INDEX_NAME;
  Handle gcpl{check(H5Gget_create_plist(group), "H5Gget_create_plist"), H5Pclose};
  unsigned order = 0;
  check_ok(H5Pget_link_creation_order(gcpl.id(), &order), "H5Pget_link_creation_order");
  if ((order & H5P_CRT_ORDER_INDEXED) != 0) index = H5_INDEX_CRT_ORDER;
  check_ok(H5Literate(group, index, H5_ITER_INC, nullptr, add_name, &names), "H5Literate");
  return names;
}

// --- types -----------------------------------------------------------------------------------

Handle string_type(std::size_t size) {
  Handle t{check(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose};
  check_ok(H5Tset_size(t.id(), std::max<std::size_t>(size, 1)), "H5Tset_size");
  check_ok(H5Tset_strpad(t.id(), H5T_STR_NULLPAD), "H5Tset_strpad");
  check_ok(H5Tset_cset(t.id(), H5T_CSET_ASCII), "H5Tset_cset");
  return t;
}

hid_t native(Type t) {
  return t == Type::int64 ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE;
}

Type type_of_dataset(hid_t dset, std::size_t* string_size) {
  Handle t{check(H5Dget_type(dset), "H5Dget_type"), H5Tclose};
  const H5T_class_t cls = H5Tget_class(t.id());
  if (cls == H5T_STRING) {
    if (string_size != nullptr) *string_size = H5Tget_size(t.id());
    return Type::string;
  }
  if (cls == H5T_INTEGER) return Type::int64;
  if (cls == H5T_FLOAT) return Type::float64;
  throw Error(fmt::format("unsupported HDF5 type class {}", static_cast<int>(cls)));
}

// --- attributes ------------------------------------------------------------------------------

namespace {
void write_attr_raw(hid_t loc, const std::string& name, hid_t type, const void* data) {
  Handle space{check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose};
  Handle attr{check(H5Acreate2(loc, name.c_str(), type, space.id(), H5P_DEFAULT, H5P_DEFAULT),
                    fmt::format("H5Acreate2({})", name)),
              H5Aclose};
  check_ok(H5Awrite(attr.id(), type, data), fmt::format("H5Awrite({})", name));
}

Handle open_attr(hid_t loc, const std::string& name) {
  return {check(H5Aopen(loc, name.c_str(), H5P_DEFAULT), fmt::format("H5Aopen({})", name)),
          H5Aclose};
}
}  // namespace

void write_attr(hid_t loc, const std::string& name, const std::string& value) {
  // Attributes are written once, before SWMR starts: sized to the value, never truncated.
  Handle t = string_type(value.size());
  std::string buf = value;
  buf.resize(std::max<std::size_t>(value.size(), 1), '\0');
  write_attr_raw(loc, name, t.id(), buf.data());
}

void write_attr(hid_t loc, const std::string& name, std::int64_t value) {
  write_attr_raw(loc, name, H5T_NATIVE_INT64, &value);
}

void write_attr(hid_t loc, const std::string& name, double value) {
  write_attr_raw(loc, name, H5T_NATIVE_DOUBLE, &value);
}

bool has_attr(hid_t loc, const std::string& name) {
  return check_tri(H5Aexists(loc, name.c_str()), "H5Aexists");
}

void delete_attr(hid_t loc, const std::string& name) {
  check_ok(H5Adelete(loc, name.c_str()), fmt::format("H5Adelete({})", name));
}

std::string read_attr_string(hid_t loc, const std::string& name) {
  Handle attr = open_attr(loc, name);
  Handle t{check(H5Aget_type(attr.id()), "H5Aget_type"), H5Tclose};
  if (H5Tget_class(t.id()) != H5T_STRING)
    throw Error(fmt::format("attribute '{}' is not a string", name));
  if (check_tri(H5Tis_variable_str(t.id()), "H5Tis_variable_str")) {
    char* s = nullptr;
    check_ok(H5Aread(attr.id(), t.id(), &s), fmt::format("H5Aread({})", name));
    std::string out = s != nullptr ? s : "";
    H5free_memory(s);
    return out;
  }
  const std::size_t size = H5Tget_size(t.id());
  std::string buf(size, '\0');
  check_ok(H5Aread(attr.id(), t.id(), buf.data()), fmt::format("H5Aread({})", name));
  return unpack_string(buf.data(), size);
}

std::int64_t read_attr_int(hid_t loc, const std::string& name) {
  Handle attr = open_attr(loc, name);
  std::int64_t v = 0;
  check_ok(H5Aread(attr.id(), H5T_NATIVE_INT64, &v), fmt::format("H5Aread({})", name));
  return v;
}

double read_attr_double(hid_t loc, const std::string& name) {
  Handle attr = open_attr(loc, name);
  double v = 0;
  check_ok(H5Aread(attr.id(), H5T_NATIVE_DOUBLE, &v), fmt::format("H5Aread({})", name));
  return v;
}

// --- 1-D extendible datasets -----------------------------------------------------------------

Handle create_column(hid_t group, const std::string& name, Type type, std::size_t string_size) {
  Handle str;
  hid_t file_type = H5I_INVALID_HID;
  std::size_t elem = 8;
  if (type == Type::string) {
    str = string_type(string_size);
    file_type = str.id();
    elem = std::max<std::size_t>(string_size, 1);
  } else {
    file_type = type == Type::int64 ? H5T_STD_I64LE : H5T_IEEE_F64LE;
  }
  const hsize_t dims[1] = {0};
  const hsize_t maxdims[1] = {H5S_UNLIMITED};
  Handle space{check(H5Screate_simple(1, dims, maxdims), "H5Screate_simple"), H5Sclose};
  Handle dcpl = create_plist(H5P_DATASET_CREATE);
  const hsize_t chunk[1] = {std::clamp<hsize_t>(kChunkBytes / elem, kMinChunkRows, kMaxChunkRows)};
  check_ok(H5Pset_chunk(dcpl.id(), 1, chunk), "H5Pset_chunk");
  // A chunk is written whole (zero-filled) when allocated, so the file never ends inside an
  // allocated-but-unwritten chunk: after a kill the end of file is never short of the stored EOA.
  check_ok(H5Pset_fill_time(dcpl.id(), H5D_FILL_TIME_ALLOC), "H5Pset_fill_time");
  if (type == Type::float64) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    check_ok(H5Pset_fill_value(dcpl.id(), H5T_NATIVE_DOUBLE, &nan), "H5Pset_fill_value");
  } else if (type == Type::int64) {
    const std::int64_t minus_one = -1;
    check_ok(H5Pset_fill_value(dcpl.id(), H5T_NATIVE_INT64, &minus_one), "H5Pset_fill_value");
  }
  return {check(H5Dcreate2(group, name.c_str(), file_type, space.id(), H5P_DEFAULT, dcpl.id(),
                           H5P_DEFAULT),
                fmt::format("H5Dcreate2({})", name)),
          H5Dclose};
}

Handle open_dataset(hid_t loc, const std::string& name, hid_t dapl) {
  return {check(H5Dopen2(loc, name.c_str(), dapl), fmt::format("H5Dopen2({})", name)), H5Dclose};
}

std::int64_t length(hid_t dset) {
  Handle space{check(H5Dget_space(dset), "H5Dget_space"), H5Sclose};
  if (H5Sget_simple_extent_ndims(space.id()) != 1) throw Error("dataset is not 1-D");
  hsize_t dims[1] = {0};
  check(H5Sget_simple_extent_dims(space.id(), dims, nullptr), "H5Sget_simple_extent_dims");
  return static_cast<std::int64_t>(dims[0]);
}

void set_length(hid_t dset, std::int64_t n) {
  const hsize_t dims[1] = {static_cast<hsize_t>(n)};
  check_ok(H5Dset_extent(dset, dims), "H5Dset_extent");
}

void refresh(hid_t dset) {
  check_ok(H5Drefresh(dset), "H5Drefresh");
}

namespace {
struct Selection {
  Handle file;
  Handle mem;
};

Selection select_rows(hid_t dset, std::int64_t start, std::int64_t count) {
  Selection s;
  s.file = Handle{check(H5Dget_space(dset), "H5Dget_space"), H5Sclose};
  const hsize_t off[1] = {static_cast<hsize_t>(start)};
  const hsize_t cnt[1] = {static_cast<hsize_t>(count)};
  check_ok(H5Sselect_hyperslab(s.file.id(), H5S_SELECT_SET, off, nullptr, cnt, nullptr),
           "H5Sselect_hyperslab");
  s.mem = Handle{check(H5Screate_simple(1, cnt, nullptr), "H5Screate_simple"), H5Sclose};
  return s;
}
}  // namespace

void write_rows(hid_t dset, hid_t mem_type, std::int64_t start, std::int64_t count,
                const void* data) {
  if (count <= 0) return;
  const Selection s = select_rows(dset, start, count);
  check_ok(H5Dwrite(dset, mem_type, s.mem.id(), s.file.id(), H5P_DEFAULT, data), "H5Dwrite");
}

Handle simple_space(std::int64_t n) {
  const hsize_t dims[1] = {static_cast<hsize_t>(n)};
  return {check(H5Screate_simple(1, dims, nullptr), "H5Screate_simple"), H5Sclose};
}

void resize_space(hid_t space, std::int64_t n) {
  const hsize_t dims[1] = {static_cast<hsize_t>(n)};
  check_ok(H5Sset_extent_simple(space, 1, dims, nullptr), "H5Sset_extent_simple");
}

void write_selected(hid_t dset, hid_t mem_type, hid_t file_space, hid_t mem_space,
                    std::int64_t start, std::int64_t count, const void* data) {
  if (count <= 0) return;
  const hsize_t off[1] = {static_cast<hsize_t>(start)};
  const hsize_t cnt[1] = {static_cast<hsize_t>(count)};
  check_ok(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, off, nullptr, cnt, nullptr),
           "H5Sselect_hyperslab");
  check_ok(H5Dwrite(dset, mem_type, mem_space, file_space, H5P_DEFAULT, data), "H5Dwrite");
}

void read_rows(hid_t dset, hid_t mem_type, std::int64_t start, std::int64_t count, void* data) {
  if (count <= 0) return;
  const Selection s = select_rows(dset, start, count);
  check_ok(H5Dread(dset, mem_type, s.mem.id(), s.file.id(), H5P_DEFAULT, data), "H5Dread");
}

bool pack_string(std::string_view value, char* field, std::size_t size) {
  std::size_t n = value.size();
  const bool cut = n > size;
  if (cut) {
    n = size;
    // Do not leave half a UTF-8 sequence: back up over continuation bytes (10xxxxxx) to the
    // lead byte and drop it too.
    if (n < value.size() && (static_cast<unsigned char>(value[n]) & 0xC0) == 0x80) {
      while (n > 0 && (static_cast<unsigned char>(value[n]) & 0xC0) == 0x80) --n;
    }
  }
  std::memcpy(field, value.data(), n);
  std::memset(field + n, 0, size - n);
  return !cut;
}

std::string unpack_string(const char* field, std::size_t size) {
  const void* nul = std::memchr(field, 0, size);
  return {field,
          nul != nullptr ? static_cast<std::size_t>(static_cast<const char*>(nul) - field) : size};
}

}  // namespace dnnscape::store::h5
