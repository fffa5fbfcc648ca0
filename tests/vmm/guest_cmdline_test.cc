// The kernel command line `vmm run` gives a Linux guest under kvm_pvm (machine/guest_cmdline.h).
#include "machine/guest_cmdline.h"

#include <gtest/gtest.h>

namespace vmm {
namespace {

constexpr const char* kAll = "noxsave nosmap nosmep clearcpuid=cx16,popcnt,smap,smep";

GuestCmdline pvm_linux(const char* user) { return compose_guest_cmdline(user, true, true, true); }

TEST(GuestCmdlineTest, AppendsAllUnderPvmForLinux) {
  GuestCmdline r = pvm_linux("console=ttyS0 quiet");
  EXPECT_EQ(r.cmdline, std::string("console=ttyS0 quiet ") + kAll);
  EXPECT_EQ(r.added, kAll);
  EXPECT_EQ(pvm_workaround_params(), kAll);
}

TEST(GuestCmdlineTest, EmptyUserCmdline) {
  EXPECT_EQ(pvm_linux("").cmdline, kAll);
  EXPECT_EQ(pvm_linux("   ").cmdline, kAll);
}

TEST(GuestCmdlineTest, LeavesCmdlineAloneUnlessLinuxUnderPvmWithWorkaroundsOn) {
  for (int mask = 0; mask < 7; ++mask) {  // every combination but all three true
    GuestCmdline r = compose_guest_cmdline("console=ttyS0", mask & 1, mask & 2, mask & 4);
    EXPECT_EQ(r.cmdline, "console=ttyS0") << mask;
    EXPECT_EQ(r.added, "") << mask;
  }
}

// KVM's TSC frequency becomes tsc_early_khz= (no PIT, HPET or PM timer to calibrate against);
// the user's own value wins, and without a known frequency nothing is added.
TEST(GuestCmdlineTest, AddsTheTscFrequencyUnlessTheUserGaveOne) {
  GuestCmdline r = compose_guest_cmdline("console=ttyS0 -- init-arg", true, true, true, 2445400);
  EXPECT_EQ(r.cmdline,
            std::string("console=ttyS0 ") + kAll + " tsc_early_khz=2445400 tsc=unstable -- init-arg");
  EXPECT_EQ(r.added, std::string(kAll) + " tsc_early_khz=2445400 tsc=unstable");
  r = compose_guest_cmdline("tsc_early_khz=1000 tsc=reliable " + std::string(kAll), true, true, true,
                            2445400);
  EXPECT_EQ(r.added, "");
  EXPECT_EQ(compose_guest_cmdline("", true, true, true, 0).added, kAll);  // frequency unknown
  EXPECT_EQ(compose_guest_cmdline("", true, false, true, 2445400).cmdline, "");
  EXPECT_EQ(compose_guest_cmdline("", true, true, false, 2445400).cmdline, "");
}

TEST(GuestCmdlineTest, DoesNotRepeatWhatTheUserGave) {
  GuestCmdline r = pvm_linux("nosmap console=ttyS0 noxsave nosmep clearcpuid=smep,cx16,popcnt,smap");
  EXPECT_EQ(r.cmdline, "nosmap console=ttyS0 noxsave nosmep clearcpuid=smep,cx16,popcnt,smap");
  EXPECT_EQ(r.added, "");
}

TEST(GuestCmdlineTest, MergesMissingFeaturesIntoTheUsersClearcpuid) {
  GuestCmdline r = pvm_linux("clearcpuid=avx512f,popcnt quiet");
  EXPECT_EQ(r.cmdline, "clearcpuid=avx512f,popcnt,cx16,smap,smep quiet noxsave nosmap nosmep");
  EXPECT_EQ(r.added, "noxsave nosmap nosmep clearcpuid=+cx16,smap,smep");
  // An empty list gets the features without a leading comma.
  EXPECT_EQ(pvm_linux("clearcpuid= noxsave nosmap nosmep").cmdline,
            "clearcpuid=cx16,popcnt,smap,smep noxsave nosmap nosmep");
}

TEST(GuestCmdlineTest, PartialWordsDoNotCount) {
  // "nosmapx" is not "nosmap", and a "noxsave" after "--" is init's argument, not the kernel's.
  GuestCmdline r = pvm_linux("nosmapx -- noxsave");
  EXPECT_EQ(r.cmdline, std::string("nosmapx ") + kAll + " -- noxsave");
}

TEST(GuestCmdlineTest, InsertsBeforeInitArguments) {
  EXPECT_EQ(pvm_linux("console=ttyS0 -- check=blk").cmdline,
            std::string("console=ttyS0 ") + kAll + " -- check=blk");
  EXPECT_EQ(pvm_linux("-- a b").cmdline, std::string(kAll) + " -- a b");
}

TEST(GuestCmdlineTest, QuotedValuesStayOneWord) {
  // A quoted value holding " -- " or a flag name is one parameter, not a separator.
  GuestCmdline r = pvm_linux("x=\"a -- noxsave\" y");
  EXPECT_EQ(r.cmdline, std::string("x=\"a -- noxsave\" y ") + kAll);
}

}  // namespace
}  // namespace vmm
