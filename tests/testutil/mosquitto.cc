#include "tests/testutil/mosquitto.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sodium.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <sstream>

extern char** environ;

namespace safepoint::testing {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// argv/envp arrays built before fork(), so the child only calls async-signal-safe functions.
struct ExecArgs {
  std::vector<std::string> storage;
  std::vector<char*> argv;
  std::vector<char*> envp;

  ExecArgs(const std::vector<std::string>& args, const std::vector<std::string>& extra_env) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    for (const auto& extra : extra_env) env.push_back(extra);
    storage.reserve(args.size() + env.size());
    for (const auto& a : args) storage.push_back(a);
    for (const auto& e : env) storage.push_back(e);
    for (std::size_t i = 0; i < args.size(); ++i) argv.push_back(storage[i].data());
    argv.push_back(nullptr);
    for (std::size_t i = args.size(); i < storage.size(); ++i) envp.push_back(storage[i].data());
    envp.push_back(nullptr);
  }
};

// Starts a child with the given stdin/stdout/stderr (-1: /dev/null). The child dies with us.
pid_t Spawn(const std::vector<std::string>& args, int in_fd, int out_fd, int err_fd,
            const std::vector<std::string>& extra_env = {}) {
  ExecArgs exec(args, extra_env);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  // Child.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);
  const int null_fd = ::open("/dev/null", O_RDWR);
  ::dup2(in_fd >= 0 ? in_fd : null_fd, 0);
  ::dup2(out_fd >= 0 ? out_fd : null_fd, 1);
  ::dup2(err_fd >= 0 ? err_fd : null_fd, 2);
  ::setpgid(0, 0);
  ::execve(exec.argv[0], exec.argv.data(), exec.envp.data());
  ::_exit(127);
}

bool WaitExit(pid_t pid, milliseconds timeout, int* status) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
}

bool PortAccepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

std::string RandomHex(std::size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  randombytes_buf(buf.data(), buf.size());
  constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : buf) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::string FromHex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

// Runs a tool that must succeed; reports its output on failure.
bool MustRun(const std::vector<std::string>& argv, const std::string& what) {
  std::string output;
  const int rc = RunProgram(argv, "", &output, milliseconds(30000));
  if (rc != 0) {
    ADD_FAILURE() << what << " failed (exit " << rc << "): " << output;
    return false;
  }
  return true;
}

constexpr char kOpenssl[] = "/usr/bin/openssl";

bool MakeCa(const std::string& dir, const std::string& name, const std::string& cn) {
  return MustRun({kOpenssl,
                  "req",
                  "-x509",
                  "-newkey",
                  "ec",
                  "-pkeyopt",
                  "ec_paramgen_curve:prime256v1",
                  "-nodes",
                  "-keyout",
                  dir + "/" + name + ".key",
                  "-out",
                  dir + "/" + name + ".crt",
                  "-days",
                  "2",
                  "-subj",
                  "/CN=" + cn,
                  "-addext",
                  "basicConstraints=critical,CA:TRUE",
                  "-addext",
                  "keyUsage=critical,keyCertSign,cRLSign"},
                 "openssl (CA " + name + ")");
}

}  // namespace

int RunProgram(const std::vector<std::string>& argv, const std::string& input, std::string* output,
               milliseconds timeout, const std::vector<std::string>& extra_env) {
  int in_pipe[2];
  int out_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) return -1;
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    ::close(in_pipe[0]);
    ::close(in_pipe[1]);
    return -1;
  }
  const pid_t pid = Spawn(argv, in_pipe[0], out_pipe[1], out_pipe[1], extra_env);
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  if (pid < 0) {
    ::close(in_pipe[1]);
    ::close(out_pipe[0]);
    return -1;
  }
  // Small inputs only (a pipe buffer's worth); enough for test payloads.
  ::signal(SIGPIPE, SIG_IGN);
  if (!input.empty()) {
    [[maybe_unused]] const ssize_t n = ::write(in_pipe[1], input.data(), input.size());
  }
  ::close(in_pipe[1]);

  const auto deadline = Clock::now() + timeout;
  std::string collected;
  bool timed_out = false;
  while (true) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{out_pipe[0], POLLIN, 0};
    const int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(out_pipe[0], buf, sizeof(buf));
    if (n <= 0) break;
    collected.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out_pipe[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  if (!WaitExit(pid, milliseconds(5000), &status)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  if (output != nullptr) *output = collected;
  if (timed_out || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// --- SpawnedProcess --------------------------------------------------------------------------

SpawnedProcess::SpawnedProcess(const std::vector<std::string>& argv,
                               const std::vector<std::string>& extra_env) {
  int out_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe failed";
    return;
  }
  pid_ = Spawn(argv, -1, out_pipe[1], out_pipe[1], extra_env);
  ::close(out_pipe[1]);
  if (pid_ < 0) {
    ::close(out_pipe[0]);
    ADD_FAILURE() << "cannot start " << argv.front();
    return;
  }
  const int fd = out_pipe[0];
  reader_ = std::thread([this, fd] {
    char buf[65536];
    while (true) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      {
        std::lock_guard lock(mu_);
        output_.append(buf, static_cast<std::size_t>(n));
      }
      cv_.notify_all();
    }
    ::close(fd);
    {
      std::lock_guard lock(mu_);
      eof_ = true;
    }
    cv_.notify_all();
  });
}

SpawnedProcess::~SpawnedProcess() {
  if (pid_ > 0) (void)Signal(SIGKILL);
  if (reader_.joinable()) reader_.join();
}

bool SpawnedProcess::WaitForOutput(const std::string& text, milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] {
    return eof_ || output_.find(text) != std::string::npos;
  }) && output_.find(text) != std::string::npos;
}

std::string SpawnedProcess::output() {
  std::lock_guard lock(mu_);
  return output_;
}

int SpawnedProcess::Signal(int signal, milliseconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, signal);
  int status = 0;
  if (!WaitExit(pid_, timeout, &status)) return -1;
  pid_ = -1;
  return status;
}

// --- CliSubscriber ---------------------------------------------------------------------------

CliSubscriber::CliSubscriber(const std::vector<std::string>& argv, const std::string& config_home) {
  int out_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe failed";
    return;
  }
  pid_ = Spawn(argv, -1, out_pipe[1], out_pipe[1], {"XDG_CONFIG_HOME=" + config_home});
  ::close(out_pipe[1]);
  if (pid_ < 0) {
    ::close(out_pipe[0]);
    ADD_FAILURE() << "cannot start mosquitto_sub";
    return;
  }
  const int fd = out_pipe[0];
  reader_ = std::thread([this, fd] { ReadLoop(fd); });
}

CliSubscriber::~CliSubscriber() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  if (reader_.joinable()) reader_.join();
}

void CliSubscriber::ReadLoop(int fd) {
  std::string pending;
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<std::size_t>(n));
    std::size_t start = 0;
    std::vector<CliMessage> batch;
    bool subscribed = false;
    while (true) {
      const auto end = pending.find('\n', start);
      if (end == std::string::npos) break;
      const std::string line = pending.substr(start, end - start);
      start = end + 1;
      if (line.rfind("Subscribed (mid:", 0) == 0) subscribed = true;
      if (line.rfind("MSG ", 0) != 0) continue;
      // "MSG <retained 0|1> <hex payload> <topic>"; the hex is empty for an empty payload.
      std::istringstream in(line.substr(4));
      std::string retained;
      std::string hex;
      in >> retained;
      in.get();
      std::getline(in, hex, ' ');
      std::string topic;
      std::getline(in, topic);
      batch.push_back(CliMessage{topic, FromHex(hex), retained == "1"});
    }
    pending.erase(0, start);
    {
      std::lock_guard lock(mu_);
      if (subscribed) subscribed_ = true;
      for (auto& m : batch) messages_.push_back(std::move(m));
    }
    cv_.notify_all();
  }
  ::close(fd);
  {
    std::lock_guard lock(mu_);
    eof_ = true;
  }
  cv_.notify_all();
}

bool CliSubscriber::WaitSubscribed(milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return subscribed_ || eof_; }) && subscribed_;
}

std::vector<CliMessage> CliSubscriber::WaitFor(std::size_t count, milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return messages_.size() >= count || eof_; });
  return messages_;
}

// --- Mosquitto -------------------------------------------------------------------------------

Mosquitto::Mosquitto(MosquittoOptions options) : options_(std::move(options)) {
  if (sodium_init() < 0) ADD_FAILURE() << "sodium_init failed";
  fixture_password_ = RandomHex(16);
  if (options_.tls) MakeCertificates();
  WriteCliConfig();
}

Mosquitto::~Mosquitto() { Stop(); }

std::string Mosquitto::url() const {
  return std::string(options_.tls ? "mqtts" : "mqtt") + "://127.0.0.1:" + std::to_string(port_);
}

std::string Mosquitto::Log() const { return ReadFile(log_file()).value_or(""); }

void Mosquitto::MakeCertificates() {
  const std::string dir = dir_.Sub("tls");
  std::filesystem::create_directories(dir);
  if (!MakeCa(dir, "ca", "safepoint test CA") || !MakeCa(dir, "other-ca", "unrelated test CA")) {
    return;
  }
  WriteFile(
      dir + "/server.ext",
      "subjectAltName=" + options_.tls_subject_alt_name +
          "\nbasicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n");
  if (!MustRun(
          {kOpenssl, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-keyout", dir + "/server.key", "-out", dir + "/server.csr", "-subj", "/CN=localhost"},
          "openssl (server key)")) {
    return;
  }
  (void)MustRun({kOpenssl, "x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/ca.crt",
                 "-CAkey", dir + "/ca.key", "-CAcreateserial", "-out", dir + "/server.crt", "-days",
                 "2", "-extfile", dir + "/server.ext"},
                "openssl (server certificate)");
}

void Mosquitto::WriteConfig() {
  std::ostringstream conf;
  conf << "per_listener_settings false\n"
       << "persistence false\n"
       << "log_dest stderr\n"
       << "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
       << "connection_messages true\n"
       // By default the broker drops every packet (QoS 0 and 1 alike) for a client that has
       // 1,000 unsent; tests that publish 10,000 messages and then a command would lose the
       // command whenever the service lags a few tens of milliseconds on a loaded machine.
       << "max_queued_messages 1000000\n"
       << "allow_anonymous " << (options_.allow_anonymous ? "true" : "false") << "\n";
  if (::geteuid() == 0) {
    // As root, mosquitto would switch to the "mosquitto" user, which cannot read our files.
    const passwd* pw = ::getpwuid(::geteuid());
    conf << "user " << (pw != nullptr ? pw->pw_name : "root") << "\n";
  }
  // The fixture's own CLI user: only needed when something restricts clients.
  const bool restricted = !options_.users.empty() || !options_.acl.empty();
  if (restricted) {
    std::string passwords;
    for (const auto& [user, password] : options_.users) {
      passwords.append(user).append(":").append(password).append("\n");
    }
    passwords += "safepoint-fixture:" + fixture_password_ + "\n";
    const std::string path = dir_.Sub("passwd");
    WriteFile(path, passwords, 0600);
    (void)MustRun({"/usr/bin/mosquitto_passwd", "-U", path}, "mosquitto_passwd -U");
    conf << "password_file " << path << "\n";
    const std::string acl = options_.acl + "\n\nuser safepoint-fixture\ntopic readwrite #\n";
    if (!options_.acl.empty()) {
      WriteFile(dir_.Sub("acl"), acl, 0600);
      conf << "acl_file " << dir_.Sub("acl") << "\n";
    }
  }
  conf << "listener " << port_ << " 127.0.0.1\n";
  if (options_.tls) {
    conf << "cafile " << ca_file() << "\n"
         << "certfile " << dir_.Sub("tls/server.crt") << "\n"
         << "keyfile " << dir_.Sub("tls/server.key") << "\n"
         << "require_certificate false\n";
  }
  WriteFile(dir_.Sub("mosquitto.conf"), conf.str(), 0600);
}

void Mosquitto::WriteCliConfig() {
  // mosquitto_pub/mosquitto_sub read default options from $XDG_CONFIG_HOME/<tool>: this keeps
  // the fixture password out of the process list.
  std::string opts = "-h 127.0.0.1\n";
  if (!options_.users.empty() || !options_.acl.empty()) {
    opts += "-u safepoint-fixture\n-P " + fixture_password_ + "\n";
  }
  if (options_.tls) opts += "--cafile " + ca_file() + "\n";
  WriteFile(dir_.Sub("cli/mosquitto_pub"), opts, 0600);
  WriteFile(dir_.Sub("cli/mosquitto_sub"), opts, 0600);
}

bool Mosquitto::Start() {
  if (running()) return true;
  const bool fixed_port = port_ != 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (!fixed_port) port_ = FreeLoopbackPort();
    if (StartOnce()) return true;
    if (!fixed_port) continue;
    // Same port (Restart): the old socket may linger for a moment.
    std::this_thread::sleep_for(milliseconds(200));
  }
  ADD_FAILURE() << "mosquitto did not start on port " << port_ << "; log:\n" << Log();
  return false;
}

bool Mosquitto::StartOnce() {
  WriteConfig();
  const int log_fd = ::open(log_file().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  pid_ = Spawn({"/usr/sbin/mosquitto", "-c", dir_.Sub("mosquitto.conf")}, -1, log_fd, log_fd);
  if (log_fd >= 0) ::close(log_fd);
  if (pid_ < 0) {
    pid_ = -1;
    return false;
  }
  const auto deadline = Clock::now() + milliseconds(10000);
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;  // exited: most likely the port was taken
      return false;
    }
    if (PortAccepts(port_)) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  Kill();
  return false;
}

void Mosquitto::Stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  if (!WaitExit(pid_, milliseconds(10000), &status)) {
    ADD_FAILURE() << "mosquitto ignored SIGTERM; killing it";
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
}

void Mosquitto::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

bool Mosquitto::Restart() {
  Stop();
  return Start();
}

std::vector<std::string> Mosquitto::CliArgs(const std::string& tool) const {
  return {"/usr/bin/" + tool, "-p", std::to_string(port_)};
}

bool Mosquitto::Pub(const std::string& topic, const std::string& payload, bool retain, int qos) {
  auto argv = CliArgs("mosquitto_pub");
  argv.insert(argv.end(), {"-t", topic, "-q", std::to_string(qos)});
  if (payload.empty()) {
    argv.emplace_back("-n");
  } else {
    argv.emplace_back("-s");
  }
  if (retain) argv.emplace_back("-r");
  std::string output;
  const int rc = RunProgram(argv, payload, &output, milliseconds(10000),
                            {"XDG_CONFIG_HOME=" + dir_.Sub("cli")});
  if (rc != 0) ADD_FAILURE() << "mosquitto_pub to " << topic << " failed: " << output;
  return rc == 0;
}

std::unique_ptr<CliSubscriber> Mosquitto::Sub(const std::string& filter, int qos) {
  // mosquitto_sub block-buffers stdout into a pipe; line buffering makes each line (and the
  // "Subscribed" debug line) visible at once.
  auto argv = CliArgs("mosquitto_sub");
  argv.insert(argv.begin(), {"/usr/bin/stdbuf", "-oL"});
  argv.insert(argv.end(), {"-d", "-t", filter, "-q", std::to_string(qos), "-F", "MSG %r %x %t"});
  auto sub = std::make_unique<CliSubscriber>(argv, dir_.Sub("cli"));
  if (!sub->WaitSubscribed(milliseconds(10000))) {
    ADD_FAILURE() << "mosquitto_sub did not subscribe to " << filter;
  }
  return sub;
}

std::vector<CliMessage> Mosquitto::SubCollect(const std::string& filter, std::size_t count,
                                              milliseconds timeout) {
  auto sub = Sub(filter);
  return sub->WaitFor(count, timeout);
}

}  // namespace safepoint::testing
