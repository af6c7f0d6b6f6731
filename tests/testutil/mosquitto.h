#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/testutil/testutil.h"

namespace safepoint::testing {

// A message as the real mosquitto_sub saw it.
struct CliMessage {
  std::string topic;
  std::string payload;
  bool retained = false;
  bool operator==(const CliMessage&) const = default;
};

// A received message's payload as JSON (discarded when it is not JSON).
inline nlohmann::json Payload(const CliMessage& m) {
  return nlohmann::json::parse(m.payload, nullptr, false);
}

// How the test broker is set up.
struct MosquittoOptions {
  bool allow_anonymous = true;
  // (user, password) pairs for a password file. The file is hashed in place with
  // `mosquitto_passwd -U`, so no password appears in a process list.
  std::vector<std::pair<std::string, std::string>> users;
  // Content of an ACL file (mosquitto's acl_file syntax); empty means no ACL file.
  std::string acl;
  // Serve MQTT over TLS with a certificate from a CA made with openssl for this broker.
  bool tls = false;
  // The server certificate's subjectAltName (TLS only); tests of host-name checks change it.
  std::string tls_subject_alt_name = "IP:127.0.0.1,DNS:localhost";
};

// A running mosquitto_sub: collects what arrives on a filter.
class CliSubscriber {
 public:
  CliSubscriber(const std::vector<std::string>& argv, const std::string& config_home);
  ~CliSubscriber();
  CliSubscriber(const CliSubscriber&) = delete;
  CliSubscriber& operator=(const CliSubscriber&) = delete;

  // True once the broker acknowledged the subscription (within `timeout`).
  [[nodiscard]] bool WaitSubscribed(std::chrono::milliseconds timeout);
  // Waits until `count` messages arrived or `timeout` passed; returns all received so far.
  [[nodiscard]] std::vector<CliMessage> WaitFor(std::size_t count,
                                                std::chrono::milliseconds timeout);

 private:
  void ReadLoop(int fd);

  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool subscribed_ = false;
  bool eof_ = false;
  std::vector<CliMessage> messages_;
};

// /usr/sbin/mosquitto as a child process on a free loopback port, configured in a temp dir.
// Every wait is bounded; failures are reported with ADD_FAILURE and the broker's log.
class Mosquitto {
 public:
  explicit Mosquitto(MosquittoOptions options = {});
  ~Mosquitto();  // stops the broker
  Mosquitto(const Mosquitto&) = delete;
  Mosquitto& operator=(const Mosquitto&) = delete;

  // Picks a free port (first start only), starts the broker and waits until it accepts
  // connections. Returns false (after ADD_FAILURE) when it does not come up.
  [[nodiscard]] bool Start();
  // SIGTERM and wait.
  void Stop();
  // SIGKILL and wait: the broker vanishes without closing anything cleanly.
  void Kill();
  // Stop, then Start on the same port.
  [[nodiscard]] bool Restart();
  [[nodiscard]] bool running() const { return pid_ > 0; }

  [[nodiscard]] int port() const { return port_; }
  // mqtt://127.0.0.1:<port>, or mqtts://127.0.0.1:<port> with TLS.
  [[nodiscard]] std::string url() const;
  // The CA that signed the broker's certificate (TLS only).
  [[nodiscard]] std::string ca_file() const { return dir_.Sub("tls/ca.crt"); }
  // A second CA that has nothing to do with the broker (for wrong-CA tests).
  [[nodiscard]] std::string other_ca_file() const { return dir_.Sub("tls/other-ca.crt"); }
  [[nodiscard]] std::string log_file() const { return dir_.Sub("mosquitto.log"); }
  [[nodiscard]] std::string Log() const;

  // Publishes one message with the real mosquitto_pub (as a fixture user allowed everything).
  // The payload goes through stdin. Returns true when mosquitto_pub succeeded.
  [[nodiscard]] bool Pub(const std::string& topic, const std::string& payload, bool retain = false,
                         int qos = 1);
  // Starts mosquitto_sub on `filter` and waits (bounded) until it is subscribed.
  [[nodiscard]] std::unique_ptr<CliSubscriber> Sub(const std::string& filter, int qos = 1);
  // Subscribes, collects `count` messages or until `timeout`, and returns what arrived.
  [[nodiscard]] std::vector<CliMessage> SubCollect(const std::string& filter, std::size_t count,
                                                   std::chrono::milliseconds timeout);

 private:
  bool StartOnce();
  void WriteConfig();
  void MakeCertificates();
  void WriteCliConfig();
  std::vector<std::string> CliArgs(const std::string& tool) const;

  MosquittoOptions options_;
  TempDir dir_;
  int port_ = 0;
  pid_t pid_ = -1;
  std::string fixture_password_;
};

// A child process running in the background (for helpers that must die abruptly, services
// under test). stdout and stderr are collected. Killed with SIGKILL on destruction, and when the
// test process dies.
class SpawnedProcess {
 public:
  // `argv[0]` is an absolute path. `extra_env` entries ("NAME=value") extend the environment.
  SpawnedProcess(const std::vector<std::string>& argv,
                 const std::vector<std::string>& extra_env = {});
  ~SpawnedProcess();
  SpawnedProcess(const SpawnedProcess&) = delete;
  SpawnedProcess& operator=(const SpawnedProcess&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  // True once `text` appeared in the output (within `timeout`).
  [[nodiscard]] bool WaitForOutput(const std::string& text, std::chrono::milliseconds timeout);
  [[nodiscard]] std::string output();
  // Sends `signal` and reaps the process (bounded); returns the wait status, -1 on timeout.
  int Signal(int signal, std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;
  bool eof_ = false;
};

// Runs a program to completion within `timeout` (killed after). stdin gets `input`; stdout and
// stderr are collected into `*output` when given. Returns the exit status, or -1 on a failure
// to start, a signal or the timeout.
int RunProgram(const std::vector<std::string>& argv, const std::string& input, std::string* output,
               std::chrono::milliseconds timeout, const std::vector<std::string>& extra_env = {});

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreeLoopbackPort();

}  // namespace safepoint::testing
