// Legacy device models (8250 UART, i8042, RTC) and the run configuration parsers.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "devices/acpi_sleep.h"
#include "devices/i8042.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "machine/config.h"

namespace vmm {
namespace {

struct Uart {
  std::string out;
  std::vector<bool> irq;
  Serial s{[this](uint8_t b) { out.push_back(char(b)); }, [this](bool l) { irq.push_back(l); }};
  uint8_t rd(uint8_t reg) {
    uint8_t v = 0;
    s.bus_read(reg, std::span<uint8_t>(&v, 1));
    return v;
  }
  void wr(uint8_t reg, uint8_t v) { s.bus_write(reg, std::span<const uint8_t>(&v, 1)); }
};

TEST(SerialTest, TransmitsAndReportsEmptyHoldingRegister) {
  Uart u;
  u.wr(Serial::kData, 'h');
  u.wr(Serial::kData, 'i');
  EXPECT_EQ(u.out, "hi");
  EXPECT_EQ(u.rd(Serial::kLsr) & 0x60, 0x60);
  EXPECT_TRUE(u.irq.empty());  // no interrupts enabled
}

TEST(SerialTest, DivisorLatchAndScratch) {
  Uart u;
  u.wr(Serial::kLcr, 0x83);
  u.wr(Serial::kData, 0x01);
  u.wr(Serial::kIer, 0x02);
  EXPECT_EQ(u.rd(Serial::kData), 0x01);
  EXPECT_EQ(u.rd(Serial::kIer), 0x02);
  u.wr(Serial::kLcr, 0x03);
  EXPECT_EQ(u.rd(Serial::kIer), 0x00);  // IER untouched by DLM writes
  EXPECT_TRUE(u.out.empty());
  u.wr(Serial::kScr, 0x5a);
  EXPECT_EQ(u.rd(Serial::kScr), 0x5a);
}

TEST(SerialTest, ThreInterruptRaisedOnEnableAndClearedByIirRead) {
  Uart u;
  u.wr(Serial::kIer, Serial::kIerThri);
  ASSERT_EQ(u.irq, std::vector<bool>({true}));
  EXPECT_EQ(u.rd(Serial::kIir) & 0x0f, Serial::kIirThri);
  EXPECT_EQ(u.irq.back(), false);
  EXPECT_EQ(u.rd(Serial::kIir) & 0x0f, Serial::kIirNone);
  u.wr(Serial::kData, 'x');  // transmitted at once: THRE pending again
  EXPECT_EQ(u.irq.back(), true);
}

TEST(SerialTest, ReceiveRaisesRdiUntilDrained) {
  Uart u;
  u.wr(Serial::kIir, Serial::kFcrEnable);  // FCR
  u.wr(Serial::kIer, Serial::kIerRdi);
  EXPECT_EQ(u.s.receive(std::vector<uint8_t>{'a', 'b'}), 2u);
  EXPECT_EQ(u.irq.back(), true);
  EXPECT_EQ(u.rd(Serial::kIir), 0xc0 | Serial::kIirRdi);
  EXPECT_EQ(u.rd(Serial::kLsr) & 1, 1);
  EXPECT_EQ(u.rd(Serial::kData), 'a');
  EXPECT_EQ(u.rd(Serial::kData), 'b');
  EXPECT_EQ(u.rd(Serial::kLsr) & 1, 0);
  EXPECT_EQ(u.irq.back(), false);
}

TEST(SerialTest, LoopbackAsLinuxProbesIt) {
  Uart u;
  u.wr(Serial::kMcr, Serial::kMcrLoop | 0x0a);
  EXPECT_EQ(u.rd(Serial::kMsr) & 0xf0, 0x90);  // what serial8250 autoconfig expects
  u.wr(Serial::kData, 0x42);
  EXPECT_TRUE(u.out.empty());
  EXPECT_EQ(u.rd(Serial::kData), 0x42);
}

// A machine reset: registers as at power-on, the FIFO emptied and the raised line lowered.
TEST(SerialTest, ResetRestoresPowerOnRegistersAndLowersTheLine) {
  Uart u;
  u.wr(Serial::kLcr, 0x1b);
  u.wr(Serial::kMcr, 0x0b);
  u.wr(Serial::kScr, 0x77);
  u.wr(Serial::kIer, Serial::kIerRdi);
  ASSERT_EQ(u.s.receive(std::vector<uint8_t>{'x', 'y'}), 2u);
  ASSERT_EQ(u.irq.back(), true);
  u.s.reset();
  EXPECT_EQ(u.irq.back(), false);
  EXPECT_EQ(u.rd(Serial::kIer), 0);
  EXPECT_EQ(u.rd(Serial::kLcr), 0x03);
  EXPECT_EQ(u.rd(Serial::kMcr), 0x08);
  EXPECT_EQ(u.rd(Serial::kScr), 0);
  EXPECT_EQ(u.rd(Serial::kLsr) & 1, 0);  // nothing left to read
  EXPECT_EQ(u.rd(Serial::kIir), Serial::kIirNone);
  EXPECT_EQ(u.s.rx_space(), Serial::kRxCapacity);
}

TEST(SerialTest, ReceiveQueueIsBounded) {
  Uart u;
  std::vector<uint8_t> big(Serial::kRxCapacity + 10, 'z');
  EXPECT_EQ(u.s.receive(big), Serial::kRxCapacity);
  EXPECT_EQ(u.s.rx_space(), 0u);
}

struct Kbd {
  int resets = 0;
  std::vector<bool> irq;
  I8042 k{[this] { ++resets; }, [this](bool l) { irq.push_back(l); }};
  void wr(uint64_t off, uint8_t v) { k.bus_write(off, std::span<const uint8_t>(&v, 1)); }
  uint8_t rd(uint64_t off) {
    uint8_t v = 0;
    k.bus_read(off, std::span<uint8_t>(&v, 1));
    return v;
  }
};

TEST(I8042Test, PulseResetEndsTheVm) {
  Kbd k;
  k.wr(4, 0xfe);
  EXPECT_EQ(k.resets, 1);
}

TEST(I8042Test, OutputPortResetBit) {
  Kbd k;
  k.wr(4, 0xd1);
  k.wr(0, 0x03);  // bit 0 set: no reset
  EXPECT_EQ(k.resets, 0);
  k.wr(4, 0xd1);
  k.wr(0, 0x02);
  EXPECT_EQ(k.resets, 1);
}

TEST(I8042Test, SelfTestAndCommandByte) {
  Kbd k;
  EXPECT_EQ(k.rd(4) & 1, 0);
  k.wr(4, 0xaa);
  EXPECT_EQ(k.rd(4) & 1, 1);
  EXPECT_EQ(k.rd(0), 0x55);
  k.wr(4, 0x60);
  k.wr(0, 0x61);
  k.wr(4, 0x20);
  EXPECT_EQ(k.rd(0), 0x61);
  k.wr(4, 0xad);  // other commands never reset
  EXPECT_EQ(k.resets, 0);
}

// Reads the output buffer while OBF says a byte waits.
std::vector<uint8_t> drain(Kbd& k) {
  std::vector<uint8_t> got;
  for (int i = 0; i < 100 && (k.rd(4) & 1); ++i) got.push_back(k.rd(0));
  return got;
}

// A machine reset drops the keys that were still queued and the configuration the guest set.
TEST(I8042Test, ResetEmptiesTheBuffersAndRestoresTheCommandByte) {
  Kbd k;
  k.wr(4, 0x60);
  k.wr(0, 0x20);  // translation and interrupts off
  k.k.press_ctrl_alt_del();
  ASSERT_EQ(k.rd(4) & 1, 1);
  k.k.reset();
  EXPECT_EQ(k.rd(4) & 1, 0);
  EXPECT_TRUE(drain(k).empty());
  k.wr(4, 0x20);
  EXPECT_EQ(k.rd(0), 0x45);
  EXPECT_EQ(k.resets, 0);
}

TEST(I8042Test, CtrlAltDelInSet1WithTranslationOneIrqPulsePerByte) {
  Kbd k;  // the default configuration byte 0x45: translation on, keyboard interrupt on
  k.k.press_ctrl_alt_del();
  EXPECT_EQ(drain(k), (std::vector<uint8_t>{0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d}));
  ASSERT_EQ(k.irq.size(), 16u);
  for (size_t i = 0; i < k.irq.size(); ++i) EXPECT_EQ(k.irq[i], i % 2 == 0) << i;
  EXPECT_EQ(k.resets, 0);
}

TEST(I8042Test, CtrlAltDelInSet2WithoutTranslationAndNoIrqWhenMasked) {
  Kbd k;
  k.wr(4, 0x60);
  k.wr(0, 0x04);  // no translation, keyboard interrupt off
  k.k.press_ctrl_alt_del();
  EXPECT_EQ(drain(k), (std::vector<uint8_t>{0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11,
                                            0xf0, 0x14}));
  EXPECT_TRUE(k.irq.empty());
}

// What Linux's atkbd_probe and atkbd_activate send: a keyboard answers, so the driver binds.
TEST(I8042Test, KeyboardAnswersTheAtkbdProbe) {
  Kbd k;
  k.wr(0, 0xf2);  // get ID
  EXPECT_EQ(drain(k), (std::vector<uint8_t>{0xfa, 0xab, 0x41}));
  k.wr(0, 0xff);  // reset
  EXPECT_EQ(drain(k), (std::vector<uint8_t>{0xfa, 0xaa}));
  k.wr(0, 0xed);  // LEDs + parameter
  k.wr(0, 0x00);
  k.wr(0, 0xf4);  // enable
  EXPECT_EQ(drain(k), (std::vector<uint8_t>{0xfa, 0xfa, 0xfa}));
  k.wr(4, 0xd4);  // a byte for the (absent) aux device is swallowed
  k.wr(0, 0xf2);
  EXPECT_TRUE(drain(k).empty());
  // A guest that never reads cannot grow the queue without bound.
  for (int i = 0; i < 1000; ++i) k.wr(0, 0xf4);
  EXPECT_LE(drain(k).size(), I8042::kMaxQueued + 1);
}

// Linux's acpi_hw_extended_sleep(5): clears WAK_STS in the status register, writes
// SLP_TYP 5 << 2 | SLP_EN to the control register, then polls WAK_STS.
TEST(AcpiSleepTest, S5WithSleepEnablePowersOff) {
  int offs = 0;
  AcpiSleep d([&] { ++offs; });
  auto wr = [&](uint64_t off, uint8_t v) { d.bus_write(off, std::span<const uint8_t>(&v, 1)); };
  wr(1, 0x80);
  EXPECT_EQ(offs, 0);
  uint8_t status = 0xff;
  d.bus_read(1, std::span<uint8_t>(&status, 1));
  EXPECT_EQ(status, 0);  // not awake from a sleep: the guest keeps polling until vmm stops it
  wr(0, 5 << 2);  // SLP_TYP without SLP_EN: nothing yet
  EXPECT_EQ(offs, 0);
  wr(0, 3 << 2 | 0x20);  // S3 is not offered: ignored
  EXPECT_EQ(offs, 0);
  wr(0, 5 << 2 | 0x20);
  EXPECT_EQ(offs, 1);
}

TEST(RtcTest, BcdTimeFromClock) {
  Rtc rtc([] { return std::time_t(1700000000); });  // 2023-11-14 22:13:20 UTC, Tuesday
  auto rd = [&](uint8_t idx) {
    uint8_t v = idx;
    rtc.bus_write(0, std::span<const uint8_t>(&v, 1));
    rtc.bus_read(1, std::span<uint8_t>(&v, 1));
    return v;
  };
  EXPECT_EQ(rd(0x00), 0x20);
  EXPECT_EQ(rd(0x02), 0x13);
  EXPECT_EQ(rd(0x04), 0x22);
  EXPECT_EQ(rd(0x07), 0x14);
  EXPECT_EQ(rd(0x08), 0x11);
  EXPECT_EQ(rd(0x09), 0x23);
  EXPECT_EQ(rd(0x32), 0x20);
  EXPECT_EQ(rd(0x0b), 0x02);
  EXPECT_EQ(rd(0x0a) & 0x80, 0);
}

TEST(ConfigTest, ParseSize) {
  EXPECT_EQ(*parse_size("512M"), 512ull << 20);
  EXPECT_EQ(*parse_size("2G"), 2ull << 30);
  EXPECT_EQ(*parse_size("2GiB"), 2ull << 30);
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("64k"), 64u << 10);
  for (const char* bad : {"", "M", "12X", "-1", "99999999999999999999", "20000000T"}) {
    EXPECT_FALSE(parse_size(bad)) << bad;
  }
}

TEST(ConfigTest, ParseDiskSpec) {
  auto d = parse_disk_spec("/x/a.qcow2,format=qcow2,readonly=on");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->path, "/x/a.qcow2");
  EXPECT_EQ(d->format, "qcow2");
  EXPECT_TRUE(d->read_only);
  EXPECT_FALSE(parse_disk_spec(",format=raw"));
  EXPECT_FALSE(parse_disk_spec("a,format=vmdk"));
  EXPECT_FALSE(d->direct);
  auto n = parse_disk_spec("a.img,cache=none");
  ASSERT_TRUE(n);
  EXPECT_TRUE(n->direct);
  EXPECT_FALSE(parse_disk_spec("a,cache=unsafe"));
  EXPECT_FALSE(parse_disk_spec("a,snapshot=on"));
}

TEST(ConfigTest, Validate) {
  MachineConfig c;
  c.kernel = "k";
  EXPECT_TRUE(validate(c));
  c.cpus = 0;
  EXPECT_FALSE(validate(c));
  c.cpus = 1;
  c.memory = 1 << 20;
  EXPECT_FALSE(validate(c));
}

}  // namespace
}  // namespace vmm
