#include "core/rollback/restart.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <string>

#include "core/base/secret.h"
#include "tests/testutil/testutil.h"

namespace safepoint::restart {
namespace {

using safepoint::testing::ReadFile;
using safepoint::testing::TempDir;
using std::chrono::milliseconds;

config::RestartConfig Shell(const std::string& name, const std::string& script,
                            milliseconds timeout = milliseconds(10000)) {
  config::RestartConfig r;
  r.name = name;
  r.command = {"/bin/sh", "-c", script};
  r.timeout = timeout;
  return r;
}

TEST(Restart, ReportsExitCodeAndLastTwentyLinesOfCombinedOutput) {
  auto out = Execute(Shell("ha",
                           "i=1; while [ $i -le 30 ]; do echo line $i; i=$((i+1)); done; "
                           "echo oops >&2; exit 3"));
  EXPECT_FALSE(out.ok);
  EXPECT_EQ(out.exit_code, 3);
  EXPECT_EQ(out.signal, 0);
  EXPECT_FALSE(out.timed_out);
  EXPECT_EQ(out.error, "exited with status 3");
  ASSERT_EQ(out.output_tail.size(), kTailLines);
  EXPECT_EQ(out.output_tail.front(), "line 12");
  EXPECT_EQ(out.output_tail[18], "line 30");
  EXPECT_EQ(out.output_tail.back(), "oops");
  EXPECT_EQ(out.name, "ha");
  auto j = ToJson(out);
  EXPECT_EQ(j["exit_code"], 3);
  EXPECT_EQ(j["error"], "exited with status 3");
  EXPECT_EQ(j["output_tail"].size(), kTailLines);
}

TEST(Restart, SuccessKeepsAFinalLineWithoutNewline) {
  auto out = Execute(Shell("ok", "printf 'a\\nb'"));
  EXPECT_TRUE(out.ok);
  EXPECT_EQ(out.exit_code, 0);
  EXPECT_EQ(out.error, "");
  EXPECT_EQ(out.output_tail, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(ToJson(out).contains("error"));
}

TEST(Restart, TimeoutSendsTermThenKillToTheWholeGroup) {
  TempDir dir;
  // The shell ignores SIGTERM; its child `sleep` is in the same process group.
  auto r = Shell("stuck", "trap '' TERM; echo started; sleep 30; echo never", milliseconds(300));
  auto out = Execute(r, milliseconds(200));
  EXPECT_FALSE(out.ok);
  EXPECT_TRUE(out.timed_out);
  EXPECT_EQ(out.signal, SIGKILL);
  EXPECT_EQ(out.exit_code, -1);
  EXPECT_EQ(out.error, "timed out after 300ms (killed)");
  EXPECT_EQ(out.output_tail, (std::vector<std::string>{"started"}));
  EXPECT_GE(out.duration.count(), 450);
  EXPECT_LT(out.duration.count(), 10000);
}

TEST(Restart, TimeoutTerminatesACooperativeCommand) {
  auto out = Execute(Shell("slow", "sleep 30", milliseconds(200)), milliseconds(5000));
  EXPECT_TRUE(out.timed_out);
  EXPECT_EQ(out.signal, SIGTERM);
  EXPECT_EQ(out.error, "timed out after 200ms (terminated)");
  EXPECT_LT(out.duration.count(), 5000);
}

TEST(Restart, MissingProgramIsReportedNotThrown) {
  config::RestartConfig r;
  r.name = "nope";
  r.command = {"/nonexistent/safepoint-test-binary", "x"};
  auto out = Execute(r);
  EXPECT_FALSE(out.ok);
  EXPECT_EQ(out.error,
            "cannot start /nonexistent/safepoint-test-binary: No such file or directory");
}

TEST(Restart, ArgumentsAreNotInterpretedByAShell) {
  config::RestartConfig r;
  r.name = "echo";
  r.command = {"echo", "$HOME; rm -rf /tmp/x", "*"};
  auto out = Execute(r);
  EXPECT_TRUE(out.ok);
  EXPECT_EQ(out.output_tail, (std::vector<std::string>{"$HOME; rm -rf /tmp/x *"}));
}

TEST(Restart, ChildEnvironmentHoldsNoPassphrase) {
  TempDir dir;
  const Secret passphrase(std::string_view("restart-test-passphrase-7f3a"));
  auto out = Execute(Shell("env", "env > " + dir.Sub("env.txt")));
  ASSERT_TRUE(out.ok) << out.error;
  auto env = ReadFile(dir.Sub("env.txt"));
  ASSERT_TRUE(env);
  EXPECT_NE(env->find("PATH="), std::string::npos);
  EXPECT_EQ(env->find(passphrase.view()), std::string::npos);
  EXPECT_EQ(env->find("backup_encryption_passphrase"), std::string::npos);
}

TEST(Restart, RunsOnlyRestartsWhoseRootsChangedAndContinuesAfterAFailure) {
  TempDir dir;
  const std::string marker = dir.Sub("ran");
  auto fail = Shell("first", "exit 1");
  fail.when_changed = {config::SourceRoot::kHaConfig};
  auto ws = Shell("workspace-only", "echo ws >> " + marker);
  ws.when_changed = {config::SourceRoot::kWorkspace};
  auto both = Shell("both", "echo both >> " + marker);
  auto outs = RunAffected({fail, ws, both}, {config::SourceRoot::kHaConfig});
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_EQ(outs[0].name, "first");
  EXPECT_EQ(outs[0].exit_code, 1);
  EXPECT_EQ(outs[1].name, "both");
  EXPECT_TRUE(outs[1].ok);
  EXPECT_EQ(ReadFile(marker), "both\n");
  EXPECT_TRUE(RunAffected({fail, ws, both}, {}).empty());
}

TEST(Restart, LongLinesAreCut) {
  auto out = Execute(Shell("long", "head -c 5000 /dev/zero | tr '\\0' x; echo; echo end"));
  ASSERT_EQ(out.output_tail.size(), 2u);
  EXPECT_EQ(out.output_tail[0], std::string(kMaxLineBytes, 'x') + "...");
  EXPECT_EQ(out.output_tail[1], "end");
}

}  // namespace
}  // namespace safepoint::restart
