#include "analysis/gnuplot.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <stdexcept>

extern char** environ;  // NOLINT: POSIX

#ifndef DNNSCAPE_GNUPLOT
#define DNNSCAPE_GNUPLOT "gnuplot"
#endif

namespace dnnscape::analysis {
namespace {

// gnuplot SCRIPT > LOG 2>&1, without a shell, so no path is ever interpreted. Returns the exit
// status (or -1 when it could not start).
int run_gnuplot(const std::filesystem::path& script, const std::filesystem::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::string prog = DNNSCAPE_GNUPLOT;
  std::string arg = script.string();
  std::array<char*, 3> argv{prog.data(), arg.data(), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, prog.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

std::string gp_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::vector<std::filesystem::path> render(const std::string& script,
                                          const std::filesystem::path& base, int width,
                                          int height) {
  std::vector<std::filesystem::path> outputs;
  const std::array<std::pair<const char*, std::string>, 2> terminals{{
      {"svg",
       fmt::format(
           "set terminal svg size {},{} dynamic enhanced font 'Sans,11' background '#ffffff'",
           width, height)},
      {"png",
       fmt::format("set terminal pngcairo size {},{} enhanced font 'Sans,10' background '#ffffff'",
                   width, height)},
  }};
  for (const auto& [ext, terminal] : terminals) {
    const auto out = std::filesystem::path(base).replace_extension(ext);
    const auto gp = std::filesystem::path(base).replace_extension(std::string(ext) + ".gp");
    {
      std::ofstream f(gp);
      f << terminal << "\nset output " << gp_quote(out.string()) << "\n"
        << script << "\nunset output\n";
      if (!f) throw std::runtime_error(fmt::format("cannot write {}", gp.string()));
    }
    const auto log = std::filesystem::path(base).replace_extension(std::string(ext) + ".log");
    const int rc = run_gnuplot(gp, log);
    std::ifstream lf(log);
    std::string msg((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
    if (rc != 0 || !std::filesystem::exists(out)) {
      throw std::runtime_error(fmt::format("gnuplot failed on {}: {}", gp.string(), msg));
    }
    std::filesystem::remove(log);
    std::filesystem::remove(gp);
    outputs.push_back(out);
  }
  return outputs;
}

}  // namespace dnnscape::analysis
