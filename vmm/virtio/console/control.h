// The virtio-console multiport control protocol (virtio 1.2 §5.3.6.2), as a pure state machine:
// the driver's control messages go in, the device's replies come out; no queues, no I/O, so the
// unit tests and fuzz/virtio_console_control_fuzz.cc drive it directly and the device
// (console_device.cc) only moves bytes.
//
// The conversation Linux's virtio_console driver has with it:
//   driver DEVICE_READY(1)  -> device PORT_ADD(id, 1) for every port
//   driver PORT_READY(id,1) -> device CONSOLE_PORT(id, 1) and RESIZE(id) for the console port,
//                              PORT_NAME(id) + name for a named port, PORT_OPEN(id, 1) if the
//                              host side is connected
//   driver PORT_OPEN(id, v) -> the guest opened (1) or closed (0) the port; no reply
// and later, from the host: PORT_OPEN(id, 0) when the host side of a port goes away, RESIZE when
// the console's terminal changes size.
//
// Anything else from the driver (an unknown port, an event only a device sends, a short message)
// is refused with a message naming it, and changes nothing.
//
// Thread-safety: none; the device uses it on its queue server thread only.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "img/status.h"

namespace vmm::virtio::console {

namespace ctl {
// §5.3.6.2 struct virtio_console_control { le32 id; le16 event; le16 value; }, then for
// PORT_NAME the name and for RESIZE struct virtio_console_resize { le16 cols; le16 rows; }.
inline constexpr size_t kHeaderSize = 8;
inline constexpr uint16_t kDeviceReady = 0;
inline constexpr uint16_t kDeviceAdd = 1;  // "PORT_ADD" in Linux
inline constexpr uint16_t kDeviceRemove = 2;
inline constexpr uint16_t kPortReady = 3;
inline constexpr uint16_t kConsolePort = 4;
inline constexpr uint16_t kResize = 5;
inline constexpr uint16_t kPortOpen = 6;
inline constexpr uint16_t kPortName = 7;
inline constexpr uint32_t kBadId = 0xffffffffu;  // DEVICE_READY's id
// Port names: what QEMU's virtserialport name= is used for (org.qemu.guest_agent.0).
inline constexpr size_t kMaxNameLength = 128;
}  // namespace ctl

struct ControlMsg {
  uint32_t id = 0;
  uint16_t event = 0;
  uint16_t value = 0;
  std::vector<uint8_t> extra;  // the name (PORT_NAME) or the size (RESIZE)
  bool operator==(const ControlMsg&) const = default;
};

std::vector<uint8_t> encode_control(const ControlMsg& m);
// A message from the driver: at least the header; trailing bytes are kept in extra.
img::Result<ControlMsg> decode_control(std::span<const uint8_t> bytes);
// A port name a user may give: 1..128 of [A-Za-z0-9._-], the characters udev keeps in
// /dev/virtio-ports/NAME. Empty when good, else what is wrong.
std::string check_port_name(const std::string& name);

struct PortDesc {
  uint32_t id = 0;
  std::string name;      // "" for the console port
  bool console = false;  // port 0 when --console is given: the guest's hvc0
};

class PortControl {
 public:
  PortControl(std::vector<PortDesc> ports, uint16_t cols, uint16_t rows);

  // A message from the driver; the device's replies are appended to out.
  img::Status on_driver(const ControlMsg& m, std::vector<ControlMsg>& out);
  // The host side of port id connected or went away: PORT_OPEN to the driver once it is ready.
  void set_host_connected(uint32_t id, bool connected, std::vector<ControlMsg>& out);
  // The console's terminal has a new size: RESIZE for a console port the driver has readied.
  void resize(uint16_t cols, uint16_t rows, std::vector<ControlMsg>& out);
  // Whether the guest has the port open: host input is only worth delivering then (Linux drops
  // data that arrives for a port nobody in the guest has open). A console port counts as open
  // once it is ready.
  bool guest_open(uint32_t id) const;
  bool port_ready(uint32_t id) const;
  bool device_ready() const { return device_ready_; }
  // Device reset: the driver forgets everything it was told.
  void reset();

 private:
  struct Port {
    PortDesc d;
    bool ready = false;
    bool guest_open = false;
    bool host_connected = true;
  };
  Port* find(uint32_t id);
  const Port* find(uint32_t id) const;
  void announce(const Port& p, std::vector<ControlMsg>& out) const;
  ControlMsg resize_msg(uint32_t id) const;

  std::vector<Port> ports_;
  uint16_t cols_, rows_;
  bool device_ready_ = false;
};

}  // namespace vmm::virtio::console
