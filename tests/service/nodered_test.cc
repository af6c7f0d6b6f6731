// examples/node-red/safepoint-update.json in real Node-RED (the pinned npm package installed by
// tests/deploy/install-node-red.sh) against a test broker and a running `safepoint serve`: the
// flow asks for a safety point, waits for the decision, runs its update command and reports; it
// runs one update at a time and keeps a pending update across a Node-RED restart.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "tests/testutil/mosquitto.h"
#include "tests/testutil/process.h"
#include "tests/testutil/testutil.h"

namespace safepoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::Payload;
using testing::CliMessage;
using testing::Mosquitto;
using testing::ReadFile;
using testing::RunProcess;
using testing::SpawnedProcess;
using testing::TempDir;
using testing::WriteFile;

std::string NodeRedDir() {
  const char* env = std::getenv("SAFEPOINT_NODE_RED");
  return env != nullptr && *env != '\0' ? env : std::string(SAFEPOINT_BUILD_DIR) + "/node-red";
}


// Waits until a message on `sub` satisfies `pred`; `seen` carries the position across calls so
// each wait continues where the previous one stopped.
std::optional<CliMessage> WaitMessage(testing::CliSubscriber& sub, std::size_t& seen,
                                      const std::function<bool(const CliMessage&)>& pred,
                                      milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto messages = sub.WaitFor(seen + 1, milliseconds(100));
    while (seen < messages.size()) {
      const auto& m = messages[seen++];
      if (pred(m)) return m;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
  }
}

class NodeRed : public ::testing::Test {
 protected:
  void SetUp() override {
    red_js_ = NodeRedDir() + "/node_modules/node-red/red.js";
    ASSERT_TRUE(fs::exists(red_js_)) << "Node-RED is not installed in " << NodeRedDir()
                                     << "; run: tests/deploy/install-node-red.sh " << NodeRedDir();
    ASSERT_TRUE(broker_.Start());

    const std::string ha = dir_.Sub("config");
    WriteFile(ha + "/configuration.yaml", "homeassistant:\n  name: Node-RED test\n");
    WriteFile(ha + "/secrets.yaml", "backup_encryption_passphrase: \"node-red test phrase\"\n",
              0600);
    config_ = dir_.Sub("safepoint.yaml");
    WriteFile(config_, "paths:\n  ha_config: " + ha + "\n  backup_dir: " + dir_.Sub("backups") +
                           "\nencryption:\n  scrypt_work_factor: 15\nsources:\n  logs: []\n"
                           "mqtt:\n  url: " +
                           broker_.url() +
                           "\n  collect_wait: 0s\nservice:\n  health_timeout: 30s\n"
                           "  schedule:\n    daily_at: \"off\"\n");
    watch_ = broker_.Sub("safepoint/#");
  }

  // The example flow, pointed at the test broker.
  std::string Flow() {
    json flow = json::parse(
        ReadFile(std::string(SAFEPOINT_SOURCE_DIR) + "/examples/node-red/safepoint-update.json")
            .value_or("null"));
    EXPECT_TRUE(flow.is_array());
    for (auto& node : flow) {
      if (node["type"] == "mqtt-broker") {
        node["broker"] = "127.0.0.1";
        node["port"] = std::to_string(broker_.port());
      }
      if (node["type"] == "inject") inject_id_ = node["id"];
      if (node["type"] == "exec" && !exec_command_.empty()) node["command"] = exec_command_;
    }
    return flow.dump(2);
  }

  std::unique_ptr<SpawnedProcess> StartNodeRed() {
    const std::string user_dir = dir_.Sub("node-red");
    WriteFile(user_dir + "/flows.json", Flow());
    http_port_ = testing::FreeLoopbackPort();
    WriteFile(user_dir + "/settings.js",
              "module.exports = {\n"
              "  uiHost: '127.0.0.1',\n"
              "  uiPort: " +
                  std::to_string(http_port_) +
                  ",\n"
                  "  flowFile: 'flows.json',\n"
                  "  credentialSecret: false,\n"
                  "  logging: { console: { level: 'info', metrics: false, audit: false } },\n"
                  "  editorTheme: { tours: false, projects: { enabled: false } },\n"
                  "  diagnostics: { enabled: false },\n"
                  "  externalModules: { autoInstall: false },\n"
                  "};\n");
    auto red = std::make_unique<SpawnedProcess>(
        std::vector<std::string>{"/usr/bin/env", "node", red_js_, "--settings",
                                 user_dir + "/settings.js", "--userDir", user_dir});
    EXPECT_TRUE(red->WaitForOutput("Connected to broker", seconds(180))) << red->output();
    return red;
  }

  // Presses the flow's inject button through Node-RED's admin API, as the editor does.
  void PressInject() {
    const std::string url =
        "http://127.0.0.1:" + std::to_string(http_port_) + "/inject/" + inject_id_;
    auto r = RunProcess({"/usr/bin/python3", "-c",
                         "import sys, urllib.request\n"
                         "r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], "
                         "data=b'', method='POST'), timeout=30)\n"
                         "print(r.status)\n",
                         url});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "200\n");
  }

  std::optional<CliMessage> Wait(const std::function<bool(const CliMessage&)>& pred,
                                 milliseconds timeout = seconds(60)) {
    return WaitMessage(*watch_, seen_, pred, timeout);
  }

  static bool IsRequest(const CliMessage& m) { return m.topic == "safepoint/update/request"; }
  static bool IsResult(const CliMessage& m) { return m.topic == "safepoint/update/result"; }

  static std::function<bool(const CliMessage&)> EventFor(const std::string& type,
                                                         const std::string& update_id) {
    return [type, update_id](const CliMessage& m) {
      const json p = Payload(m);
      return m.topic == "safepoint/event" && p.value("event_type", "") == type &&
             p["data"].value("update_id", "") == update_id;
    };
  }

  TempDir dir_;
  Mosquitto broker_;
  std::string config_;
  std::string red_js_;
  std::string inject_id_;
  std::string exec_command_;  // replaces the flow's update command when set
  int http_port_ = 0;
  std::unique_ptr<testing::CliSubscriber> watch_;
  std::size_t seen_ = 0;
};

TEST_F(NodeRed, FlowDrivesOneFullUpdateCycle) {
  SpawnedProcess service({SAFEPOINT_BINARY, "--config", config_, "serve"});
  ASSERT_TRUE(Wait([](const CliMessage& m) {
    return m.topic == "safepoint/availability" && m.payload == "online";
  })) << service.output();
  auto red = StartNodeRed();
  ASSERT_FALSE(inject_id_.empty());

  // 1. The flow asks for a safety point.
  PressInject();
  auto request = Wait([](const CliMessage& m) { return m.topic == "safepoint/update/request"; });
  ASSERT_TRUE(request) << red->output();
  const json req = Payload(*request);
  const std::string update_id = req.value("update_id", "");
  EXPECT_EQ(update_id.rfind("nodered-example-addon-", 0), 0u) << request->payload;
  EXPECT_EQ(req["target"], "example-addon");

  // 2. safepoint made it and asks; the test presses Continue like the HA button does.
  ASSERT_TRUE(Wait(EventFor("confirmation_requested", update_id))) << service.output();
  ASSERT_TRUE(broker_.Pub("safepoint/cmd/continue", "PRESS"));
  auto decision = Wait([](const CliMessage& m) { return m.topic == "safepoint/update/decision"; });
  ASSERT_TRUE(decision);
  EXPECT_EQ(Payload(*decision)["decision"], "continue");

  // 3. The flow ran its update command and reports its exit code.
  auto result = Wait([](const CliMessage& m) { return m.topic == "safepoint/update/result"; });
  ASSERT_TRUE(result) << red->output();
  EXPECT_EQ(Payload(*result),
            (json{{"update_id", update_id}, {"success", true}, {"exit_code", 0}}));

  // 4. safepoint accepts it, checks health and is idle again.
  ASSERT_TRUE(Wait(EventFor("update_succeeded", update_id))) << service.output();
  ASSERT_TRUE(Wait([](const CliMessage& m) {
    return m.topic == "safepoint/status" && Payload(m).value("state", "") == "idle";
  })) << service.output();

  // A second run, cancelled: the flow must not run the update or report a result.
  PressInject();
  auto second = Wait([](const CliMessage& m) { return m.topic == "safepoint/update/request"; });
  ASSERT_TRUE(second);
  const std::string second_id = Payload(*second).value("update_id", "");
  EXPECT_NE(second_id, update_id);
  ASSERT_TRUE(Wait(EventFor("confirmation_requested", second_id))) << service.output();
  ASSERT_TRUE(broker_.Pub("safepoint/cmd/cancel", "PRESS"));
  auto cancelled = Wait([](const CliMessage& m) { return m.topic == "safepoint/update/decision"; });
  ASSERT_TRUE(cancelled);
  EXPECT_EQ(Payload(*cancelled)["decision"], "cancel");
  EXPECT_TRUE(red->WaitForOutput("update " + second_id + " not run: cancel", seconds(30)))
      << red->output();
  EXPECT_FALSE(
      Wait([](const CliMessage& m) { return m.topic == "safepoint/update/result"; }, seconds(2)));

  EXPECT_EQ(red->output().find("node-red test phrase"), std::string::npos);
  const int status = service.Signal(SIGTERM, seconds(30));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << service.output();
}

// A second press while an update waits for its decision, and while it runs, is refused where
// the user sees it; the first update keeps its id, its Continue and its exit code.
TEST_F(NodeRed, SecondPressIsRefusedWhileAnUpdateIsPendingOrRunning) {
  // The update command runs until the test lets it finish.
  const std::string release = dir_.Sub("release-update");
  exec_command_ = "while [ ! -e '" + release + "' ]; do sleep 0.1; done; echo updated";
  SpawnedProcess service({SAFEPOINT_BINARY, "--config", config_, "serve"});
  ASSERT_TRUE(Wait([](const CliMessage& m) {
    return m.topic == "safepoint/availability" && m.payload == "online";
  })) << service.output();
  auto red = StartNodeRed();

  PressInject();
  auto request = Wait(IsRequest);
  ASSERT_TRUE(request) << red->output();
  const std::string update_id = Payload(*request).value("update_id", "");
  ASSERT_TRUE(Wait(EventFor("confirmation_requested", update_id))) << service.output();

  // Waiting for the decision: refused, nothing published.
  PressInject();
  EXPECT_TRUE(red->WaitForOutput("not started: update " + update_id + " waits for its decision",
                                 seconds(30)))
      << red->output();

  ASSERT_TRUE(broker_.Pub("safepoint/cmd/continue", "PRESS"));
  auto decision = Wait([](const CliMessage& m) { return m.topic == "safepoint/update/decision"; });
  ASSERT_TRUE(decision);
  EXPECT_EQ(Payload(*decision)["update_id"], update_id) << "the second press asked for nothing";
  EXPECT_EQ(Payload(*decision)["decision"], "continue");

  // Running: refused again.
  PressInject();
  EXPECT_TRUE(red->WaitForOutput("not started: update " + update_id + " is running", seconds(30)))
      << red->output();
  WriteFile(release, "");

  auto result = Wait(IsResult);
  ASSERT_TRUE(result) << red->output();
  EXPECT_EQ(Payload(*result),
            (json{{"update_id", update_id}, {"success", true}, {"exit_code", 0}}));
  ASSERT_TRUE(Wait(EventFor("update_succeeded", update_id))) << service.output();
  ASSERT_TRUE(Wait([](const CliMessage& m) {
    return m.topic == "safepoint/status" && Payload(m).value("state", "") == "idle";
  })) << service.output();
  // Between the first request and the result, no other request and no other result went out.
  for (const auto& m : watch_->WaitFor(0, milliseconds(0))) {
    if (IsRequest(m)) {
      EXPECT_EQ(Payload(m)["update_id"], update_id) << m.payload;
    }
    if (IsResult(m)) {
      EXPECT_EQ(Payload(m)["update_id"], update_id) << m.payload;
    }
  }

  // Done: the next press starts the next update.
  PressInject();
  auto next = Wait(IsRequest);
  ASSERT_TRUE(next) << red->output();
  const std::string next_id = Payload(*next).value("update_id", "");
  EXPECT_NE(next_id, update_id);
  ASSERT_TRUE(Wait(EventFor("confirmation_requested", next_id))) << service.output();
  ASSERT_TRUE(broker_.Pub("safepoint/cmd/cancel", "PRESS"));
  EXPECT_TRUE(red->WaitForOutput("update " + next_id + " not run: cancel", seconds(30)))
      << red->output();

  const int status = service.Signal(SIGTERM, seconds(30));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << service.output();
}

// Node-RED restarts while the update waits for its decision: the flow takes the pending update
// back from safepoint's retained status, refuses a new one, and runs it on Continue.
TEST_F(NodeRed, RestartWhileAnUpdateIsPendingKeepsIt) {
  SpawnedProcess service({SAFEPOINT_BINARY, "--config", config_, "serve"});
  ASSERT_TRUE(Wait([](const CliMessage& m) {
    return m.topic == "safepoint/availability" && m.payload == "online";
  })) << service.output();
  auto red = StartNodeRed();

  PressInject();
  auto request = Wait(IsRequest);
  ASSERT_TRUE(request) << red->output();
  const std::string update_id = Payload(*request).value("update_id", "");
  ASSERT_TRUE(Wait(EventFor("confirmation_requested", update_id))) << service.output();

  const int stopped = red->Signal(SIGTERM, seconds(60));
  EXPECT_TRUE(WIFEXITED(stopped) || WIFSIGNALED(stopped)) << stopped;
  red = StartNodeRed();
  EXPECT_TRUE(red->WaitForOutput(
      "took back update " + update_id + " (awaiting_confirmation) after a restart", seconds(60)))
      << red->output();

  PressInject();
  EXPECT_TRUE(red->WaitForOutput("not started: update " + update_id + " waits for its decision",
                                 seconds(30)))
      << red->output();

  ASSERT_TRUE(broker_.Pub("safepoint/cmd/continue", "PRESS"));
  auto result = Wait(IsResult);
  ASSERT_TRUE(result) << red->output();
  EXPECT_EQ(Payload(*result),
            (json{{"update_id", update_id}, {"success", true}, {"exit_code", 0}}));
  ASSERT_TRUE(Wait(EventFor("update_succeeded", update_id))) << service.output();
  for (const auto& m : watch_->WaitFor(0, milliseconds(0))) {
    if (IsRequest(m)) {
      EXPECT_EQ(Payload(m)["update_id"], update_id) << m.payload;
    }
  }

  const int status = service.Signal(SIGTERM, seconds(30));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << service.output();
}

}  // namespace
}  // namespace safepoint
