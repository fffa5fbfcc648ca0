#include "devices/bus.h"

#include <gtest/gtest.h>

#include <vector>

namespace vmm {
namespace {

class Recorder : public BusDevice {
 public:
  void bus_read(uint64_t offset, std::span<uint8_t> data) override {
    for (auto& b : data) b = static_cast<uint8_t>(offset);
  }
  void bus_write(uint64_t offset, std::span<const uint8_t> data) override {
    writes.push_back({offset, data[0]});
  }
  std::vector<std::pair<uint64_t, uint8_t>> writes;
};

TEST(Bus, DispatchesByRangeAndRefusesOverlap) {
  Bus bus;
  auto a = std::make_shared<Recorder>();
  ASSERT_TRUE(bus.insert(0x3f8, 8, a));
  EXPECT_FALSE(bus.insert(0x3fc, 8, a));  // overlaps
  EXPECT_FALSE(bus.insert(0x3f0, 9, a));  // overlaps from below
  uint8_t b = 0;
  EXPECT_TRUE(bus.read(0x3fa, std::span<uint8_t>(&b, 1)));
  EXPECT_EQ(b, 2);
  uint8_t v = 7;
  EXPECT_TRUE(bus.write(0x3ff, std::span<const uint8_t>(&v, 1)));
  EXPECT_EQ(a->writes.size(), 1u);
  EXPECT_EQ(a->writes[0].first, 7u);
  uint32_t w;
  // A 4-byte access running past the end of the range is not claimed.
  EXPECT_FALSE(bus.read(0x3fe, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&w), 4)));
  EXPECT_FALSE(bus.read(0x400, std::span<uint8_t>(&b, 1)));
}

}  // namespace
}  // namespace vmm
