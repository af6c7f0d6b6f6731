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

// Starts `command` in its own process group, stdin from /dev/null, stdout and stderr to `out_fd`,
// with an empty signal mask and the default handling of the signals a service may catch or
// ignore.
struct Spawned {
  pid_t pid = -1;
  int error = 0;  // of posix_spawnp; 0 when started
};
Spawned Spawn(const std::vector<std::string>& command, int out_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_fd, STDERR_FILENO);
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
  argv.reserve(command.size() + 1);
  for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  Spawned out;
  out.error = ::posix_spawnp(&out.pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  return out;
}

// How a started command ended.
struct Ended {
  int wait_status = 0;
  bool timed_out = false;  // SIGTERM was sent at the deadline
  bool kill_sent = false;  // and SIGKILL after the grace period
  std::vector<std::string> output_tail;
};

// Waits for `pid` while collecting the tail of its output from `read_fd`; at `deadline` its
// process group gets SIGTERM, `kill_grace` later SIGKILL.
Ended WaitFor(pid_t pid, int read_fd, SteadyClock::time_point deadline, Ms kill_grace) {
  Ended ended;
  LineTail tail;
  auto kill_at = SteadyClock::time_point::max();
  bool term_sent = false;
  bool exited = false;
  bool eof = false;
  char buf[4096];
  auto drain = [&](int timeout_ms) {
    pollfd p{read_fd, POLLIN, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n <= 0) return false;
    ssize_t got = ::read(read_fd, buf, sizeof buf);
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
      pid_t r = ::waitpid(pid, &ended.wait_status, WNOHANG);
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
      ended.timed_out = true;
      ::kill(-pid, SIGTERM);
      term_sent = true;
      kill_at = now + kill_grace;
    } else if (term_sent && !ended.kill_sent && now >= kill_at) {
      ::kill(-pid, SIGKILL);
      ended.kill_sent = true;
    }
    auto next = term_sent ? kill_at : deadline;
    auto wait = std::chrono::duration_cast<Ms>(next - now).count();
    int wait_ms = static_cast<int>(std::clamp<long long>(wait, 1, 50));
    if (ended.kill_sent) wait_ms = 50;
    if (!eof) {
      drain(wait_ms);
    } else {
      // Output closed: poll for the exit briefly.
      std::this_thread::sleep_for(Ms(std::min(wait_ms, 2)));
    }
  }
  ended.output_tail = tail.Finish();
  return ended;
}

// Sets the exit code or signal, `ok` and `error` of `out` from how the command ended.
void Judge(const Ended& ended, Ms timeout, Outcome& out) {
  out.timed_out = ended.timed_out;
  if (WIFEXITED(ended.wait_status)) {
    out.exit_code = WEXITSTATUS(ended.wait_status);
  } else if (WIFSIGNALED(ended.wait_status)) {
    out.signal = WTERMSIG(ended.wait_status);
  }
  if (out.timed_out) {
    out.error = "timed out after " + SecondsText(timeout) +
                (ended.kill_sent ? " (killed)" : " (terminated)");
  } else if (out.signal != 0) {
    out.error = std::string("killed by signal ") + ::strsignal(out.signal);
  } else if (out.exit_code != 0) {
    out.error = "exited with status " + std::to_string(out.exit_code);
  } else {
    out.ok = true;
  }
}

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
  const Spawned spawned = Spawn(restart.command, pipe_fds[1]);
  ::close(pipe_fds[1]);
  if (spawned.error != 0) {
    ::close(pipe_fds[0]);
    out.error = "cannot start " + restart.command[0] + ": " + std::strerror(spawned.error);
    finish(out);
    return out;
  }
  Ended ended = WaitFor(spawned.pid, pipe_fds[0], start + restart.timeout, kill_grace);
  ::close(pipe_fds[0]);
  out.output_tail = std::move(ended.output_tail);
  finish(out);
  Judge(ended, restart.timeout, out);
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
