// Progress lines and the cost-model ETA.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "orchestrator/progress.hpp"

using dnnscape::orchestrator::Progress;

TEST_CASE("ETA scales the remaining predicted time by how far off the prediction has been") {
  CHECK(Progress::eta_s(0, 0, 100) == doctest::Approx(100));
  // Half the predicted work took twice as long as predicted -> the rest will too.
  CHECK(Progress::eta_s(100, 50, 100) == doctest::Approx(100));
  CHECK(Progress::eta_s(10, 100, 100) == doctest::Approx(0));
}

TEST_CASE("durations read like a person writes them") {
  CHECK(Progress::format_duration(5) == "5s");
  CHECK(Progress::format_duration(75) == "1m15s");
  CHECK(Progress::format_duration(3 * 3600 + 120) == "3h02m");
}

TEST_CASE("without a terminal, progress is plain lines with counts and an ETA") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  Progress p(2, 10, f, /*force_plain=*/true);
  p.done("ok", 5, "fc a");
  p.done("skipped", 5, "fc b");
  p.finish();
  std::rewind(f);
  std::string text;
  char buf[512];
  while (std::fgets(buf, sizeof buf, f) != nullptr) text += buf;
  std::fclose(f);
  CHECK(text.find("progress 100% 2/2 ok 1 skipped 1 failed 0") != std::string::npos);
  CHECK(text.find("ETA 0s") != std::string::npos);
}
