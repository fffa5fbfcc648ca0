// Big-endian load/store: qcow2 stores every integer big-endian (qcow2.rst, "General").
// Byte-wise through memcpy; the compiler turns each into one move plus bswap. Never lay a struct
// over bytes read from a file.
#pragma once

#include <cstdint>
#include <cstring>

namespace img {

inline uint16_t load_be16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return __builtin_bswap16(v);
}
inline uint32_t load_be32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}
inline uint64_t load_be64(const void* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return __builtin_bswap64(v);
}
inline void store_be16(void* p, uint16_t v) {
  v = __builtin_bswap16(v);
  std::memcpy(p, &v, 2);
}
inline void store_be32(void* p, uint32_t v) {
  v = __builtin_bswap32(v);
  std::memcpy(p, &v, 4);
}
inline void store_be64(void* p, uint64_t v) {
  v = __builtin_bswap64(v);
  std::memcpy(p, &v, 8);
}

inline uint32_t load_le32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t load_le64(const void* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline void store_le32(void* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void store_le64(void* p, uint64_t v) { std::memcpy(p, &v, 8); }

inline constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
inline constexpr uint64_t align_down(uint64_t v, uint64_t a) { return v & ~(a - 1); }
inline constexpr bool is_aligned(uint64_t v, uint64_t a) { return (v & (a - 1)) == 0; }
inline constexpr uint64_t div_round_up(uint64_t v, uint64_t d) { return (v + d - 1) / d; }

}  // namespace img
