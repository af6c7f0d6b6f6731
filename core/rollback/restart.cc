#include "core/rollback/restart.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <thread>

extern char** environ;

namespace safepoint::restart {

namespace {

using Ms = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// Keeps the last kTailLines lines of a byte stream.
class LineTail {
 public:
  void Feed(const char* data, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      char c = data[i];
      if (c == '\n') {
        Flush();
        continue;
      }
      if (partial_.size() < kMaxLineBytes) {
        partial_.push_back(c);
      } else {
        cut_ = true;
      }
    }
  }

  std::vector<std::string> Finish() {
    if (!partial_.empty() || cut_) Flush();
    return {lines_.begin(), lines_.end()};
  }

 private:
  void Flush() {
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    if (cut_) partial_ += "...";
    lines_.push_back(std::move(partial_));
    partial_.clear();
    cut_ = false;
    if (lines_.size() > kTailLines) lines_.pop_front();
  }

  std::deque<std::string> lines_;
  std::string partial_;
  bool cut_ = false;
};

std::string SecondsText(Ms d) { return config::FormatDuration(d); }

}  // namespace

bool IsAffected(const config::RestartConfig& restart,
                const std::set<config::SourceRoot>& changed_roots) {
  return std::any_of(restart.when_changed.begin(), restart.when_changed.end(),
                     [&](config::SourceRoot r) { return changed_roots.count(r) != 0; });
}

Outcome Execute(const config::RestartConfig& restart, Ms kill_grace) {
  Outcome out;
  out.name = restart.name;
  out.command = restart.command;
  if (restart.command.empty()) {
    out.error = "no command configured";
    return out;
  }
  const auto start = SteadyClock::now();
  auto finish = [&](Outcome& o) {
    o.duration = std::chrono::duration_cast<Ms>(SteadyClock::now() - start);
  };

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    out.error = std::string("cannot create a pipe: ") + std::strerror(errno);
    finish(out);
    return out;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t no_signals;
  sigemptyset(&no_signals);
  sigset_t default_signals;
  sigemptyset(&default_signals);
  for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&default_signals, s);
  posix_spawnattr_setsigmask(&attr, &no_signals);
  posix_spawnattr_setsigdefault(&attr, &default_signals);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(
      &attr,
      static_cast<short>(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  std::vector<char*> argv;
  argv.reserve(restart.command.size() + 1);
  for (const auto& a : restart.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    out.error = "cannot start " + restart.command[0] + ": " + std::strerror(rc);
    finish(out);
    return out;
  }

  LineTail tail;
  const auto deadline = start + restart.timeout;
  auto kill_at = SteadyClock::time_point::max();
  bool term_sent = false;
  bool kill_sent = false;
  bool exited = false;
  bool eof = false;
  int wait_status = 0;
  char buf[4096];
  auto drain = [&](int timeout_ms) {
    pollfd p{pipe_fds[0], POLLIN, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n <= 0) return false;
    ssize_t got = ::read(pipe_fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) return true;
    if (got <= 0) {
      eof = true;
      return false;
    }
    tail.Feed(buf, static_cast<std::size_t>(got));
    return true;
  };
  for (;;) {
    if (!exited) {
      pid_t r = ::waitpid(pid, &wait_status, WNOHANG);
      if (r == pid) exited = true;
    }
    if (exited) {
      // Whatever is buffered now; a grandchild that keeps the pipe open is not waited for.
      while (!eof && drain(0)) {
      }
      break;
    }
    const auto now = SteadyClock::now();
    if (!term_sent && now >= deadline) {
      out.timed_out = true;
      ::kill(-pid, SIGTERM);
      term_sent = true;
      kill_at = now + kill_grace;
    } else if (term_sent && !kill_sent && now >= kill_at) {
      ::kill(-pid, SIGKILL);
      kill_sent = true;
    }
    auto next = term_sent ? kill_at : deadline;
    auto wait = std::chrono::duration_cast<Ms>(next - now).count();
    int wait_ms = static_cast<int>(std::clamp<long long>(wait, 1, 50));
    if (kill_sent) wait_ms = 50;
    if (!eof) {
      drain(wait_ms);
    } else {
      // Output closed: poll for the exit briefly.
      std::this_thread::sleep_for(Ms(std::min(wait_ms, 2)));
    }
  }
  ::close(pipe_fds[0]);
  out.output_tail = tail.Finish();
  finish(out);

  if (WIFEXITED(wait_status)) {
    out.exit_code = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    out.signal = WTERMSIG(wait_status);
  }
  if (out.timed_out) {
    out.error = "timed out after " + SecondsText(restart.timeout) +
                (kill_sent ? " (killed)" : " (terminated)");
  } else if (out.signal != 0) {
    out.error = std::string("killed by signal ") + ::strsignal(out.signal);
  } else if (out.exit_code != 0) {
    out.error = "exited with status " + std::to_string(out.exit_code);
  } else {
    out.ok = true;
  }
  return out;
}

std::vector<Outcome> RunAffected(const std::vector<config::RestartConfig>& restarts,
                                 const std::set<config::SourceRoot>& changed_roots, Ms kill_grace) {
  std::vector<Outcome> out;
  for (const auto& r : restarts) {
    if (IsAffected(r, changed_roots)) out.push_back(Execute(r, kill_grace));
  }
  return out;
}

nlohmann::json ToJson(const Outcome& o) {
  nlohmann::json j = {{"name", o.name},
                      {"command", o.command},
                      {"ok", o.ok},
                      {"exit_code", o.exit_code},
                      {"signal", o.signal},
                      {"timed_out", o.timed_out},
                      {"duration_ms", o.duration.count()},
                      {"output_tail", o.output_tail}};
  if (!o.error.empty()) j["error"] = o.error;
  return j;
}

}  // namespace safepoint::restart
