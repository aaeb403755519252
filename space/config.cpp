#include "space/config.hpp"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <array>
#include <memory>
#include <stdexcept>

namespace dnnscape::space {

std::string_view to_string(Family f) {
  switch (f) {
    case Family::fc:
      return "fc";
    case Family::cnn:
      return "cnn";
    case Family::rnn:
      return "rnn";
  }
  return "?";
}

Family family_from_string(std::string_view name) {
  if (name == "fc") return Family::fc;
  if (name == "cnn") return Family::cnn;
  if (name == "rnn") return Family::rnn;
  throw std::invalid_argument(fmt::format("unknown family '{}'", name));
}

const std::int64_t* int_param(const Config& c, std::string_view n) {
  return int_param(const_cast<Config&>(c), n);  // NOLINT: same storage, const view
}

std::int64_t* int_param(Config& c, std::string_view n) {
  if (n == "layers") return &c.layers;
  if (n == "nodes") return &c.nodes;
  if (n == "input") return &c.input;
  if (n == "output") return &c.output;
  if (n == "batch") return &c.batch;
  if (n == "filters") return &c.filters;
  if (n == "blocks") return &c.blocks;
  if (n == "image") return &c.image;
  if (n == "embedding") return &c.embedding;
  if (n == "length") return &c.length;
  if (n == "vocab") return &c.vocab;
  return nullptr;
}

const std::string* string_param(const Config& c, std::string_view n) {
  return string_param(const_cast<Config&>(c), n);  // NOLINT: same storage, const view
}

std::string* string_param(Config& c, std::string_view n) {
  if (n == "block_fn") return &c.block_fn;
  if (n == "cell") return &c.cell;
  return nullptr;
}

std::string Config::canonical() const {
  std::string s = fmt::format("family={}", to_string(family));
  for (auto name : kIntParams) {
    if (auto v = *int_param(*this, name); v >= 0) s += fmt::format(";{}={}", name, v);
  }
  for (auto name : kStringParams) {
    if (const auto& v = *string_param(*this, name); !v.empty()) s += fmt::format(";{}={}", name, v);
  }
  s += fmt::format(";mode={};dtype={};algorithm={};isa_cap={};threads={}", knobs.mode, knobs.dtype,
                   knobs.algorithm, knobs.isa_cap, knobs.threads);
  return s;
}

std::string Config::config_id() const {
  return sha256_hex(canonical()).substr(0, 16);
}

std::string Config::label() const {
  std::string s(to_string(family));
  for (auto name : kStringParams) {
    if (const auto& v = *string_param(*this, name); !v.empty()) s += fmt::format(" {}={}", name, v);
  }
  for (auto name : kIntParams) {
    if (auto v = *int_param(*this, name); v >= 0) s += fmt::format(" {}={}", name, v);
  }
  s += fmt::format(" {} {}", knobs.mode, knobs.dtype);
  if (knobs.algorithm != "default") s += " " + knobs.algorithm;
  if (knobs.isa_cap != "none") s += " isa<=" + knobs.isa_cap;
  if (knobs.threads != 0) s += fmt::format(" t={}", knobs.threads);
  return s;
}

std::string sha256_hex(std::string_view bytes) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), md.data(), &len) != 1) {
    throw std::runtime_error("OpenSSL SHA-256 failed");
  }
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

}  // namespace dnnscape::space
