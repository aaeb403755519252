// The --where filter: `family==fc && (batch>=256 || layers<8)` over /runs columns.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dnnscape::analysis {

struct Frame;

// A parsed boolean expression. Grammar:
//   expr := and ('||' and)* ; and := atom ('&&' atom)* ; atom := '(' expr ')' | NAME OP VALUE
//   OP := == != < <= > >= ; VALUE := number | bare word | 'quoted' | "quoted"
// Text columns compare as strings, numeric columns as numbers (a word there is an error).
class Filter {
 public:
  Filter();
  ~Filter();
  Filter(Filter&&) noexcept;
  Filter& operator=(Filter&&) noexcept;

  // Throws InputError with a one-line message ("--where: expected a value after '>=' at 12").
  static Filter parse(const std::string& expression);
  [[nodiscard]] bool empty() const;
  // Column names the expression uses, in order of first use.
  [[nodiscard]] std::vector<std::string> columns() const;
  // keep[i] &= expression(row i). Columns must be in the frame (InputError naming them if not).
  void apply(const Frame& frame, std::vector<char>& keep) const;

  struct Node;

 private:
  std::unique_ptr<Node> root_;
};

}  // namespace dnnscape::analysis
