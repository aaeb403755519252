// The --where filter: grammar, text and numeric comparisons, and its one-line errors.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "analysis/filter.hpp"
#include "analysis/frame.hpp"
#include "analysis/synth.hpp"

using namespace dnnscape::analysis;

namespace {

Frame tiny() {
  Frame f;
  f.path = "tiny.h5";
  f.rows = 4;
  f.numeric["batch"] = {64, 256, 512, 1024};
  f.numeric["layers"] = {4, 8, 4, 8};
  f.text["family"] = Categorical{{"cnn", "fc"}, {1, 1, 0, 0}};
  return f;
}

std::vector<char> eval(const std::string& expr) {
  const auto f = tiny();
  std::vector<char> keep(f.rows, 1);
  Filter::parse(expr).apply(f, keep);
  return keep;
}

}  // namespace

TEST_CASE("comparisons, && binds tighter than ||, parentheses") {
  CHECK(eval("family==fc") == std::vector<char>{1, 1, 0, 0});
  CHECK(eval("family != 'fc'") == std::vector<char>{0, 0, 1, 1});
  CHECK(eval("batch>=256 && layers<8") == std::vector<char>{0, 0, 1, 0});
  CHECK(eval("family==fc && batch>=256 || layers==8 && batch>512") ==
        std::vector<char>{0, 1, 0, 1});
  CHECK(eval("family==fc && (batch>=256 || layers==8)") == std::vector<char>{0, 1, 0, 0});
  CHECK(eval("(family==fc && batch>=256) || layers==4") == std::vector<char>{1, 1, 1, 0});
  CHECK(eval("batch > 64 && batch <= 512") == std::vector<char>{0, 1, 1, 0});
  CHECK(eval("batch == 1e3 || batch == 1024") == std::vector<char>{0, 0, 0, 1});
  CHECK(eval("   ") == std::vector<char>{1, 1, 1, 1});
  CHECK(Filter::parse("a==1 && (b<2 || a>0)").columns() == std::vector<std::string>{"a", "b"});
}

TEST_CASE("bad expressions are one-line InputErrors naming the place") {
  CHECK_THROWS_WITH_AS(eval("batch >"), "--where: expected a value after '>' at column 8",
                       InputError);
  CHECK_THROWS_WITH_AS(eval("batch = 4"), "--where: unknown operator '=' at column 7", InputError);
  CHECK_THROWS_WITH_AS(eval("(batch > 4"), "--where: expected ')' at column 11", InputError);
  CHECK_THROWS_WITH_AS(eval("batch > 4 &&"),
                       "--where: expected a column name at the end at column 13", InputError);
  CHECK_THROWS_WITH_AS(eval("batch > 4 family"), "--where: unexpected 'family' at column 11",
                       InputError);
  CHECK_THROWS_WITH_AS(eval("batch > big"),
                       "--where: column 'batch' is numeric but 'big' is not a number", InputError);
  CHECK_THROWS_WITH_AS(eval("planet == mars"), "--where: tiny.h5 has no column 'planet'",
                       InputError);
  CHECK_THROWS_WITH_AS(eval("batch # 4"), "--where: unexpected character '#' at column 7",
                       InputError);
}

TEST_CASE("load_frame keeps ok rows that pass the filter, and only the columns asked for") {
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid(
      [&](auto l, auto n, auto b) { rows.push_back(synth::fc(l, n, 2000, 200, b, 1e-3)); });
  rows[3].status = dnnscape::store::status::failed;
  synth::write("frame.h5", rows, synth::system_info("alpha"));
  const auto f = load_frame("frame.h5", {"step_time_s"}, "batch >= 512 && family == fc");
  CHECK(f.file_rows == 120);
  CHECK(f.not_ok == 1);
  CHECK(f.rows == 60 - 1);  // rows[3] is batch 512
  CHECK(f.filtered_out == 60);
  CHECK(f.numeric.count("step_time_s") == 1);
  CHECK(f.numeric.count("batch") == 1);  // named by the filter
  CHECK(f.numeric.count("nodes") == 0);
  CHECK(f.cat("family").levels == std::vector<std::string>{"fc"});
  CHECK(f.run_row.front() == 4);
  CHECK_THROWS_AS(load_frame("frame.h5", {}, "planet == mars"), InputError);
  CHECK_THROWS_AS(load_frame("missing.h5", {}, ""), InputError);
}
