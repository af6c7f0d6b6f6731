// Soak: a few hundred update cycles against the real `safepoint serve` and a real Mosquitto on
// loopback, with random decisions (continue, cancel, no answer), failed updates that roll back,
// manual rollbacks that meet conflicts and are resolved (overwrite, merge, abort), concurrent
// requests refused as busy, broker restarts and service restarts (kill -9 and SIGTERM).
//
// Bounded: SAFEPOINT_SOAK_CYCLES cycles (default 250) or SAFEPOINT_SOAK_SECONDS (default 220),
// whichever comes first; at least kMinCycles must complete. The seed is printed
// (SAFEPOINT_SOAK_SEED repeats a run). Afterwards:
//   - every update_id got exactly one decision, and the one the cycle expected;
//   - the Home Assistant tree equals the state the cycles imply, file by file;
//   - every safety point verifies (`safepoint verify --all`);
//   - the service's RSS over the undisturbed second half is flat (small slack).
// Prints "[ soak ] ..." lines with the figures; docs/reliability.md records them.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/testutil/mosquitto.h"
#include "tests/testutil/serve_fixture.h"
#include "tests/testutil/testutil.h"

namespace safepoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::Mosquitto;
using testing::Observer;
using testing::ReadFile;
using testing::ServeConfig;
using testing::ServeHarness;
using testing::WriteFile;
using Tree = std::map<std::string, std::string>;

constexpr milliseconds kWait{60000};
// Fewer count as meaningful under a sanitizer (everything is 5-15 times slower there).
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kMinCycles = 15;
// ASan's quarantine and shadow memory grow on their own; RSS says nothing about leaks there
// (LeakSanitizer checks those at exit instead).
constexpr bool kRssIsMeaningful = false;
#else
constexpr int kMinCycles = 60;
constexpr bool kRssIsMeaningful = true;
#endif

long EnvOr(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtol(v, nullptr, 10) : fallback;
}

// The tree as a short description for failure messages (paths and sizes only).
std::string Describe(const Tree& t) {
  std::string out;
  for (const auto& [p, c] : t) out += "  " + p + " (" + std::to_string(c.size()) + " bytes)\n";
  return out;
}

// The service's resident memory at rest: the least of samples taken over `window`. Work that
// follows a cycle's last message (the changes an update made are listed with one scrypt run, 32
// MiB here) is transient and drops out; a leak stays in every sample.
std::uint64_t RssAtRest(pid_t pid, milliseconds window) {
  std::uint64_t least = UINT64_MAX;
  const auto until = std::chrono::steady_clock::now() + window;
  do {
    if (auto st = testing::ReadProcStat(pid)) least = std::min(least, st->rss_bytes);
    std::this_thread::sleep_for(milliseconds(50));
  } while (std::chrono::steady_clock::now() < until);
  return least == UINT64_MAX ? 0 : least;
}

struct Figures {
  int cycles = 0;
  int continued = 0, cancelled = 0, expired = 0, busy = 0;
  int succeeded = 0, rolled_back = 0;
  int conflicts = 0, overwrite = 0, merge = 0, abort = 0;
  int broker_restarts = 0, kills = 0, terms = 0, kills_in_rollback = 0;
};

class Soak : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(broker_.Start());
    ServeConfig config;
    config.url = broker_.url();
    config.confirm_timeout = "8s";  // a restart under load must fit before the deadline
    config.health_timeout = "20s";
    config.auto_rollback = true;
    svc_.WriteConfig(config);
    obs_ = std::make_unique<Observer>(broker_.url(), std::vector<std::string>{"safepoint/#"});
    ASSERT_TRUE(obs_->ok());
    Launch();
  }

  void TearDown() override {
    if (svc_.running()) svc_.Stop();
    const std::string out = svc_.Output();
    EXPECT_EQ(out.find(ServeHarness::kPassphrase), std::string::npos);
    if (HasFailure()) {
      // Tail of the service log (it never holds the passphrase: checked above).
      if (out.find(ServeHarness::kPassphrase) == std::string::npos) {
        std::cerr << "---- service output (tail) ----\n"
                  << out.substr(out.size() > 6000 ? out.size() - 6000 : 0) << "----\n";
      }
      const auto messages = obs_ ? obs_->Since(0) : std::vector<testing::Received>{};
      std::cerr << "---- last MQTT messages ----\n";
      for (std::size_t i = messages.size() > 40 ? messages.size() - 40 : 0; i < messages.size();
           ++i) {
        const auto& m = messages[i];
        if (m.payload.find(ServeHarness::kPassphrase) != std::string::npos) continue;
        std::cerr << m.topic << (m.retained ? " (retained) " : " ") << m.payload.substr(0, 200)
                  << "\n";
      }
    }
  }

  void Launch() {
    std::size_t c = obs_->Mark();
    svc_.Start();
    ASSERT_TRUE(obs_->NextRaw("safepoint/availability", &c, kWait, [](const std::string& p) {
      return p == "online";
    })) << "the service did not come online";
  }

  // Waits for a status with `state` (and, when given, the pending update `update_id`).
  std::optional<json> WaitState(const std::string& state, std::size_t* cursor,
                                const std::string& update_id = "") {
    auto s = obs_->Next("safepoint/status", cursor, kWait, [&](const json& j) {
      if (j.value("state", "") != state) return false;
      return update_id.empty() ||
             (j["pending"].is_object() && j["pending"].value("update_id", "") == update_id);
    });
    if (!s) return std::nullopt;
    return s->Json();
  }

  std::optional<json> WaitDecision(const std::string& update_id, std::size_t* cursor) {
    auto d = obs_->Next("safepoint/update/decision", cursor, kWait,
                        [&](const json& j) { return j.value("update_id", "") == update_id; });
    if (!d) return std::nullopt;
    expected_decisions_[update_id];  // known id, whatever the count
    return d->Json();
  }

  // What a simulated update writes: it only rewrites existing files.
  void ApplyUpdate(int cycle, Tree* model) {
    const std::string conf =
        "homeassistant:\n  name: Home\n  version: " + std::to_string(cycle) + "\n";
    const std::string autos = "- id: '" + std::to_string(1700000000000 + cycle) +
                              "'\n  alias: Updated in cycle " + std::to_string(cycle) + "\n";
    WriteFile(svc_.ha() + "/configuration.yaml", conf);
    WriteFile(svc_.ha() + "/automations.yaml", autos);
    (*model)["configuration.yaml"] = conf;
    (*model)["automations.yaml"] = autos;
  }

  bool Pub(const std::string& topic, const json& payload) {
    return obs_->Publish(topic, payload.dump());
  }

  Mosquitto broker_;
  ServeHarness svc_;
  std::unique_ptr<Observer> obs_;
  std::map<std::string, std::string> expected_decisions_;  // update_id -> decision
};

TEST_F(Soak, HundredsOfCyclesWithRestartsLoseNothing) {
  const long max_cycles = EnvOr("SAFEPOINT_SOAK_CYCLES", 250);
  const long budget_s = EnvOr("SAFEPOINT_SOAK_SECONDS", 220);
  const auto seed = static_cast<std::uint32_t>(
      EnvOr("SAFEPOINT_SOAK_SEED", static_cast<long>(std::random_device{}() & 0x7fffffff)));
  std::printf("[ soak ] seed %u, up to %ld cycles or %ld s\n", seed, max_cycles, budget_s);
  std::mt19937 rng(seed);
  auto roll = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + seconds(budget_s);

  Tree model = svc_.Tree();
  Figures f;
  std::map<std::string, std::string> decided;  // update_id -> the decision the cycle saw
  // Disruptions happen in the first half (of the cycles and of the time); the rest measures RSS
  // undisturbed, after a warm-up of kWarmUp cycles.
  constexpr int kWarmUp = 10;
  const long half = max_cycles / 2;
  std::uint64_t rss_warm = 0, rss_end = 0;
  long warm_cycle = -1, calm_since = -1;

  for (int i = 0; i < max_cycles && std::chrono::steady_clock::now() < deadline; ++i) {
    SCOPED_TRACE("cycle " + std::to_string(i));
    const bool disturb =
        i < half && std::chrono::steady_clock::now() - start < seconds(budget_s / 2);
    if (!disturb && calm_since < 0) calm_since = i;
    const std::string uid = "soak-" + std::to_string(i);
    if (disturb && i > 0 && roll(6)) {
      ASSERT_TRUE(broker_.Restart());
      ++f.broker_restarts;
      // The service reconnects by itself and announces itself again.
      std::size_t c = obs_->Mark();
      ASSERT_TRUE(obs_->NextRaw("safepoint/availability", &c, kWait,
                                [](const std::string& p) { return p == "online"; }));
    }
    const Tree snapshot = model;
    std::size_t c = obs_->Mark();
    ASSERT_TRUE(Pub("safepoint/update/request", {{"update_id", uid}, {"target", "core"}}));

    // A service restart while the request is being handled (backing up or awaiting). Only once
    // the service took the request: before that, a killed clean-session client never gets it.
    if (disturb && roll(8)) {
      std::size_t b = c;
      ASSERT_TRUE(WaitState("backing_up", &b, uid));
      std::this_thread::sleep_for(milliseconds(rng() % 400));
      if (roll(60)) {
        svc_.Kill();
        ++f.kills;
      } else {
        EXPECT_EQ(svc_.Stop(), 0);
        ++f.terms;
      }
      // The cursor stays before the request: a SIGTERM lets the old process finish the backup
      // and publish awaiting_confirmation itself, and the new one does not repeat a retained
      // status that is already current.
      ASSERT_NO_FATAL_FAILURE(Launch());
    }
    auto awaiting = WaitState("awaiting_confirmation", &c, uid);
    ASSERT_TRUE(awaiting) << "no awaiting_confirmation for " << uid;
    const std::string backup_id = (*awaiting)["pending"].value("backup_id", "");
    ASSERT_FALSE(backup_id.empty());

    // A second automation asks meanwhile: refused as busy, exactly once.
    if (roll(10)) {
      const std::string other = uid + "-busy";
      std::size_t b = obs_->Mark();
      ASSERT_TRUE(Pub("safepoint/update/request", {{"update_id", other}, {"target", "addon"}}));
      auto d = WaitDecision(other, &b);
      ASSERT_TRUE(d);
      EXPECT_EQ((*d)["decision"], "cancel");
      EXPECT_TRUE((*d).value("error", "").starts_with("busy")) << d->dump();
      decided[other] = "cancel";
      ++f.busy;
    }

    const int pick = static_cast<int>(rng() % 100);
    std::size_t d = obs_->Mark();
    if (pick < 15) {  // Cancel
      ASSERT_TRUE(obs_->Publish("safepoint/cmd/cancel", "PRESS"));
      auto dec = WaitDecision(uid, &d);
      ASSERT_TRUE(dec);
      EXPECT_EQ((*dec)["decision"], "cancel");
      decided[uid] = "cancel";
      ++f.cancelled;
      ASSERT_TRUE(WaitState("idle", &d));
    } else if (pick < 18) {  // Nobody answers
      auto dec = WaitDecision(uid, &d);
      ASSERT_TRUE(dec);
      EXPECT_EQ((*dec)["decision"], "expired");
      decided[uid] = "expired";
      ++f.expired;
      ASSERT_TRUE(WaitState("idle", &d));
    } else {  // Continue, then the update
      ASSERT_TRUE(Pub("safepoint/cmd/continue", {{"update_id", uid}}));
      auto dec = WaitDecision(uid, &d);
      ASSERT_TRUE(dec);
      ASSERT_EQ((*dec)["decision"], "continue") << dec->dump();
      decided[uid] = "continue";
      ++f.continued;
      ASSERT_TRUE(WaitState("updating", &d));
      ApplyUpdate(i, &model);
      const Tree after_update = model;
      if (pick < 45) {  // The update fails: automatic rollback
        ASSERT_TRUE(Pub("safepoint/update/result",
                        {{"update_id", uid}, {"success", false}, {"exit_code", 1}}));
        bool killed = false;
        if (disturb && roll(10)) {
          // kill -9 in the middle of the rollback: it completes or reverts, never a mix.
          std::size_t r = d;
          ASSERT_TRUE(WaitState("rolling_back", &r));
          std::this_thread::sleep_for(milliseconds(rng() % 300));
          svc_.Kill();
          ++f.kills;
          ++f.kills_in_rollback;
          killed = true;
          // The restart completes or reverts what was interrupted, then is idle.
          d = obs_->Mark();
          ASSERT_NO_FATAL_FAILURE(Launch());
          ASSERT_TRUE(WaitState("idle", &d)) << "not idle after resuming the rollback";
          const Tree now = svc_.Tree();
          EXPECT_TRUE(now == snapshot || now == after_update)
              << "a mix after kill -9 during a rollback:\n"
              << Describe(now);
          model = now;
        } else {
          auto end = obs_->Next("safepoint/event", &d, kWait, [](const json& j) {
            const std::string t = j.value("event_type", "");
            return t == "rollback_completed" || t == "rollback_failed" || t == "rollback_conflicts";
          });
          ASSERT_TRUE(end);
          ASSERT_EQ(end->Json()["event_type"], "rollback_completed") << end->payload;
          ASSERT_TRUE(WaitState("idle", &d));
          model = snapshot;
        }
        (void)killed;
        ++f.rolled_back;
      } else {  // The update succeeds
        ASSERT_TRUE(Pub("safepoint/update/result", {{"update_id", uid}, {"success", true}}));
        ASSERT_TRUE(WaitState("idle", &d));
        ++f.succeeded;
        if (pick >= 85) {
          // Later someone rolls back by hand: without a fingerprint every changed file is a
          // conflict, and the user resolves it.
          std::size_t r = obs_->Mark();
          ASSERT_TRUE(Pub("safepoint/cmd/rollback", {{"backup_id", backup_id}}));
          ASSERT_TRUE(WaitState("awaiting_conflict_resolution", &r));
          ++f.conflicts;
          const int how = static_cast<int>(rng() % 3);
          const std::string action = how == 0 ? "overwrite" : how == 1 ? "merge" : "abort";
          ASSERT_TRUE(Pub("safepoint/cmd/resolve", {{"action", action}}));
          ASSERT_TRUE(WaitState("idle", &r));
          if (action == "overwrite") {
            model = snapshot;
            ++f.overwrite;
          } else if (action == "merge") {
            for (const auto& [path, content] : after_update) {
              auto it = snapshot.find(path);
              if (it != snapshot.end() && it->second != content) {
                model[path + ".safepoint-" + backup_id] = it->second;
              }
            }
            ++f.merge;
          } else {
            ++f.abort;
          }
        }
      }
    }
    const Tree now = svc_.Tree();
    ASSERT_EQ(now, model) << "files differ from the expected state after cycle " << i << "; now:\n"
                          << Describe(now) << "expected:\n"
                          << Describe(model);
    ++f.cycles;
    if (calm_since >= 0 && warm_cycle < 0 && i >= calm_since + kWarmUp) {
      rss_warm = RssAtRest(svc_.pid(), milliseconds(3000));
      ASSERT_GT(rss_warm, 0u);
      warm_cycle = i;
    }
  }
  // The service is always relaunched after a kill or SIGTERM: it must be up to be measured.
  ASSERT_TRUE(svc_.running()) << "the service is not running at the end of the soak";
  rss_end = RssAtRest(svc_.pid(), milliseconds(3000));
  ASSERT_GT(rss_end, 0u);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_GE(f.cycles, kMinCycles) << "the machine is too slow for a meaningful soak";

  // Exactly one decision per update_id, and the one the cycle saw.
  std::map<std::string, std::vector<std::string>> all;
  for (const auto& m : obs_->All("safepoint/update/decision")) {
    json j = json::parse(m.payload, nullptr, false);
    all[j.value("update_id", "?")].push_back(j.value("decision", "?"));
  }
  int lost = 0, doubled = 0, wrong = 0;
  for (const auto& [uid, decision] : decided) {
    auto it = all.find(uid);
    if (it == all.end()) {
      ++lost;
      ADD_FAILURE() << uid << ": no decision";
      continue;
    }
    if (it->second.size() != 1) {
      ++doubled;
      ADD_FAILURE() << uid << ": " << it->second.size() << " decisions";
    }
    if (it->second.front() != decision) {
      ++wrong;
      ADD_FAILURE() << uid << ": decision " << it->second.front() << ", expected " << decision;
    }
  }
  EXPECT_EQ(all.size(), decided.size()) << "decisions for update ids nobody requested";

  // Every safety point verifies: `verify --all --json` lists each one with "ok": true, and lists
  // exactly the safety points `list` shows.
  const auto verify = svc_.Cli({"--json", "verify", "--all"});
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  const json vj = json::parse(verify.out, nullptr, false);
  ASSERT_TRUE(vj.is_object() && vj.value("status", "") == "ok" && vj.contains("data") &&
              vj["data"].is_array())
      << verify.out.substr(0, 500);
  std::set<std::string> verified;
  for (const auto& r : vj["data"]) {
    EXPECT_TRUE(r.is_object() && r.contains("ok") && r["ok"] == true) << r.dump();
    if (r.is_object() && r.contains("id") && r["id"].is_string()) {
      verified.insert(r["id"].get<std::string>());
    }
  }
  const std::size_t safety_points = vj["data"].size();
  EXPECT_GT(safety_points, 0u) << verify.out.substr(0, 500);
  EXPECT_EQ(verified.size(), safety_points) << "ids missing or repeated: " << verify.out;
  const auto listed = svc_.Cli({"--json", "list"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  const json lj = json::parse(listed.out, nullptr, false);
  ASSERT_TRUE(lj.is_object() && lj.contains("data") && lj["data"].is_array()) << listed.out;
  std::set<std::string> ids;
  for (const auto& item : lj["data"]) ids.insert(item.value("id", "?"));
  EXPECT_EQ(verified, ids) << "verify --all and list disagree";

  // RSS over the undisturbed half: flat within 10% + 4 MiB.
  const double mib = 1024.0 * 1024.0;
  if (kRssIsMeaningful) {
    // The check must not fall away silently: a run that never reached its undisturbed half (or
    // ended right after the warm-up) proves nothing about memory, so it fails.
    ASSERT_GE(warm_cycle, 0) << "RSS was never measured: the run ended after " << f.cycles
                             << " cycles, before the undisturbed half plus " << kWarmUp
                             << " warm-up cycles (raise SAFEPOINT_SOAK_SECONDS)";
    EXPECT_GE(f.cycles - 1 - warm_cycle, kWarmUp)
        << "too few cycles after the warm-up (cycle " << warm_cycle << ") to judge RSS";
    EXPECT_LE(rss_end, rss_warm + rss_warm / 10 + 4 * 1024 * 1024)
        << "RSS grew from " << static_cast<double>(rss_warm) / mib << " MiB to "
        << static_cast<double>(rss_end) / mib << " MiB";
  }
  std::printf(
      "[ soak ] %d cycles in %.0f s: %d continued (%d succeeded, %d rolled back), %d cancelled, "
      "%d expired, %d busy refusals\n",
      f.cycles, elapsed, f.continued, f.succeeded, f.rolled_back, f.cancelled, f.expired, f.busy);
  std::printf("[ soak ] %d conflicts resolved (%d overwrite, %d merge, %d abort)\n", f.conflicts,
              f.overwrite, f.merge, f.abort);
  std::printf("[ soak ] %d broker restarts, %d kill -9 (%d during a rollback), %d SIGTERM\n",
              f.broker_restarts, f.kills, f.kills_in_rollback, f.terms);
  std::printf("[ soak ] decisions: %zu update ids, %d lost, %d doubled, %d wrong\n", decided.size(),
              lost, doubled, wrong);
  std::printf("[ soak ] %zu safety points verified\n", safety_points);
  if (warm_cycle >= 0) {
    std::printf("[ soak ] RSS %.1f MiB after warm-up (cycle %ld), %.1f MiB at the end\n",
                static_cast<double>(rss_warm) / mib, warm_cycle,
                static_cast<double>(rss_end) / mib);
  } else {
    std::printf("[ soak ] RSS not measured (the run ended before the undisturbed half)\n");
  }
}

// Found by the soak's RSS figure: the service kept the entity snapshot of every safety point it
// made in memory for its whole life (Daemon::entity_snapshots_, erased only when a safety point is
// deleted over MQTT, never for kept or pruned ones), so memory grew by one copy of the mirrored
// states per backup: with a large Zigbee2MQTT mirror, megabytes per day.
TEST_F(Soak, RegressionEntitySnapshotsOfFinishedBackupsAreNotKeptInMemory) {
  constexpr int kTopics = 10000;
  const std::string filler(200, 'x');
  for (int i = 0; i < kTopics; ++i) {
    ASSERT_TRUE(obs_->Publish("zigbee2mqtt/device_" + std::to_string(i),
                              json{{"state", "ON"}, {"filler", filler}, {"n", i}}.dump(), false,
                              0));
  }
  std::size_t f = obs_->Mark();
  ASSERT_TRUE(Pub("safepoint/cmd/list", {{"transaction", "fence"}}));
  ASSERT_TRUE(obs_->Next("safepoint/response/list", &f, kWait));
  auto backup = [&](int n) {
    std::size_t c = obs_->Mark();
    EXPECT_TRUE(Pub("safepoint/cmd/backup", {{"reason", "memory " + std::to_string(n)}}));
    auto done = obs_->Next("safepoint/event", &c, kWait, [](const json& j) {
      return j.value("event_type", "") == "backup_completed";
    });
    EXPECT_TRUE(done) << "backup " << n;
    EXPECT_TRUE(WaitState("idle", &c));
  };
  for (int n = 0; n < 2; ++n) backup(n);  // warm-up
  auto before = testing::ReadProcStat(svc_.pid());
  ASSERT_TRUE(before);
  constexpr int kBackups = 8;
  for (int n = 2; n < 2 + kBackups; ++n) backup(n);
  auto after = testing::ReadProcStat(svc_.pid());
  ASSERT_TRUE(after);
  // One snapshot is ~3 MB of JSON; keeping all of them would add well over 16 MiB.
  const double mib = 1024.0 * 1024.0;
  const double grown =
      (static_cast<double>(after->rss_bytes) - static_cast<double>(before->rss_bytes)) / mib;
  std::printf("[ soak ] RSS with a %d-topic mirror: %.1f MiB, %.1f MiB after %d more backups\n",
              kTopics, static_cast<double>(before->rss_bytes) / mib,
              static_cast<double>(after->rss_bytes) / mib, kBackups);
  if (kRssIsMeaningful) {
    EXPECT_LT(grown, 8.0) << "RSS grew by " << grown << " MiB over " << kBackups << " backups";
  }
}

}  // namespace
}  // namespace safepoint
