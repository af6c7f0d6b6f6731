// The safety points the service knows and the one the "Roll back" button uses
// (service/safety_points.h).
#include "service/safety_points.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace safepoint::service {
namespace {

using ::testing::ElementsAre;

TEST(SafetyPointChoice, TheNewestIsSelectedUntilTheUserChooses) {
  SafetyPointChoice choice;
  EXPECT_FALSE(choice.selected().has_value());
  EXPECT_EQ(choice.RollbackTarget(std::nullopt).error().message, "no safety point selected");
  EXPECT_TRUE(choice.Update({"2026-12-02_04-00-00"}));
  EXPECT_EQ(choice.selected(), "2026-12-02_04-00-00");
  // Before: the newest at the first listing stayed selected as if the user had
  // chosen it, so after a backup before an update "Roll back" went to an older point.
  EXPECT_TRUE(choice.Update({"2026-12-03_04-00-00", "2026-12-02_04-00-00"}));
  EXPECT_EQ(choice.selected(), "2026-12-03_04-00-00");
  EXPECT_EQ(choice.RollbackTarget(std::nullopt).value(), "2026-12-03_04-00-00");
  ASSERT_TRUE(choice.Select("2026-12-02_04-00-00"));
  EXPECT_EQ(choice.RollbackTarget(std::nullopt).value(), "2026-12-02_04-00-00");
  EXPECT_EQ(choice.RollbackTarget(std::string("other")).value(), "other");
  // A newer safety point does not move the user's choice.
  EXPECT_TRUE(choice.Update({"2026-12-04_04-00-00", "2026-12-03_04-00-00", "2026-12-02_04-00-00"}));
  EXPECT_EQ(choice.selected(), "2026-12-02_04-00-00");
  EXPECT_FALSE(
      choice.Update({"2026-12-04_04-00-00", "2026-12-03_04-00-00", "2026-12-02_04-00-00"}));
}

TEST(SafetyPointChoice, ADeletedSelectionFallsBackToTheNewest) {
  SafetyPointChoice choice;
  choice.Update({"b", "a"});
  ASSERT_TRUE(choice.Select("a"));
  EXPECT_TRUE(choice.Update({"c", "b"}));
  EXPECT_EQ(choice.selected(), "c");
  // Back to the default: the newest, whichever that is next.
  EXPECT_TRUE(choice.Update({"d", "c", "b"}));
  EXPECT_EQ(choice.selected(), "d");
  EXPECT_TRUE(choice.Update({}));
  EXPECT_FALSE(choice.selected().has_value());
  EXPECT_THAT(choice.ids(), ElementsAre());
}

TEST(SafetyPointChoice, APreRollbackPointIsNotTheDefault) {
  SafetyPointChoice choice;
  choice.Update({"b", "a"});
  EXPECT_EQ(choice.selected(), "b");
  // A rollback to b took pre-rollback point c: b stays the default.
  EXPECT_TRUE(choice.Update({"c", "b", "a"}, {"c"}));
  EXPECT_EQ(choice.selected(), "b");
  // A new backup d is the default again.
  EXPECT_TRUE(choice.Update({"d", "c", "b", "a"}, {"c"}));
  EXPECT_EQ(choice.selected(), "d");
  // Only pre-rollback points: the newest of them.
  EXPECT_TRUE(choice.Update({"f", "e"}, {"f", "e"}));
  EXPECT_EQ(choice.selected(), "f");
  // The user may choose one.
  ASSERT_TRUE(choice.Select("e"));
  EXPECT_FALSE(choice.Update({"f", "e"}, {"f", "e"}));
  EXPECT_EQ(choice.selected(), "e");
}

TEST(SafetyPointChoice, OnlyAListedSafetyPointCanBeSelected) {
  SafetyPointChoice choice;
  choice.Update({"b", "a"});
  const auto st = choice.Select("z");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(st.error().message, "no safety point z");
  EXPECT_EQ(choice.selected(), "b");
  EXPECT_TRUE(choice.Known("a"));
  EXPECT_FALSE(choice.Known("z"));
}

}  // namespace
}  // namespace safepoint::service
