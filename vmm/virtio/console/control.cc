#include "virtio/console/control.h"

#include <cstring>

namespace vmm::virtio::console {

namespace {

void put16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(static_cast<uint8_t>(x));
  v.push_back(static_cast<uint8_t>(x >> 8));
}

const char* event_name(uint16_t e) {
  switch (e) {
    case ctl::kDeviceReady:
      return "DEVICE_READY";
    case ctl::kDeviceAdd:
      return "PORT_ADD";
    case ctl::kDeviceRemove:
      return "PORT_REMOVE";
    case ctl::kPortReady:
      return "PORT_READY";
    case ctl::kConsolePort:
      return "CONSOLE_PORT";
    case ctl::kResize:
      return "RESIZE";
    case ctl::kPortOpen:
      return "PORT_OPEN";
    case ctl::kPortName:
      return "PORT_NAME";
  }
  return "an unknown event";
}

}  // namespace

std::vector<uint8_t> encode_control(const ControlMsg& m) {
  std::vector<uint8_t> v;
  v.reserve(ctl::kHeaderSize + m.extra.size());
  put16(v, static_cast<uint16_t>(m.id));
  put16(v, static_cast<uint16_t>(m.id >> 16));
  put16(v, m.event);
  put16(v, m.value);
  v.insert(v.end(), m.extra.begin(), m.extra.end());
  return v;
}

img::Result<ControlMsg> decode_control(std::span<const uint8_t> b) {
  if (b.size() < ctl::kHeaderSize) {
    return img::invalid_argument(
        img::strfmt("a control message of %zu bytes: the header alone is %zu", b.size(),
                    ctl::kHeaderSize));
  }
  ControlMsg m;
  m.id = uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
  m.event = static_cast<uint16_t>(b[4] | b[5] << 8);
  m.value = static_cast<uint16_t>(b[6] | b[7] << 8);
  m.extra.assign(b.begin() + ctl::kHeaderSize, b.end());
  return m;
}

std::string check_port_name(const std::string& name) {
  if (name.empty()) return "a port name cannot be empty";
  if (name.size() > ctl::kMaxNameLength) {
    return img::strfmt("a port name has at most %zu characters, not %zu", ctl::kMaxNameLength,
                       name.size());
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return "port name '" + name + "': only letters, digits, '.', '_' and '-'";
  }
  return {};
}

PortControl::PortControl(std::vector<PortDesc> ports, uint16_t cols, uint16_t rows)
    : cols_(cols), rows_(rows) {
  for (PortDesc& d : ports) ports_.push_back(Port{std::move(d)});
}

PortControl::Port* PortControl::find(uint32_t id) {
  for (Port& p : ports_)
    if (p.d.id == id) return &p;
  return nullptr;
}

const PortControl::Port* PortControl::find(uint32_t id) const {
  return const_cast<PortControl*>(this)->find(id);
}

ControlMsg PortControl::resize_msg(uint32_t id) const {
  ControlMsg m{id, ctl::kResize, 0, {}};
  put16(m.extra, cols_);  // §5.3.6.2 struct virtio_console_resize: cols, then rows
  put16(m.extra, rows_);
  return m;
}

void PortControl::announce(const Port& p, std::vector<ControlMsg>& out) const {
  if (p.d.console) {
    out.push_back({p.d.id, ctl::kConsolePort, 1, {}});
    out.push_back(resize_msg(p.d.id));
  }
  if (!p.d.name.empty()) {
    out.push_back({p.d.id, ctl::kPortName, 1, {p.d.name.begin(), p.d.name.end()}});
  }
  if (p.host_connected) out.push_back({p.d.id, ctl::kPortOpen, 1, {}});
}

img::Status PortControl::on_driver(const ControlMsg& m, std::vector<ControlMsg>& out) {
  switch (m.event) {
    case ctl::kDeviceReady:
      if (m.value == 0) return img::invalid_argument("the driver failed to set the device up");
      device_ready_ = true;
      for (const Port& p : ports_) out.push_back({p.d.id, ctl::kDeviceAdd, 1, {}});
      return {};
    case ctl::kPortReady: {
      Port* p = find(m.id);
      if (!p) return img::invalid_argument(img::strfmt("PORT_READY for no port %u", m.id));
      if (m.value == 0) {
        p->ready = false;
        return img::invalid_argument(img::strfmt("the driver failed to add port %u", m.id));
      }
      p->ready = true;
      if (p->d.console) p->guest_open = true;
      announce(*p, out);
      return {};
    }
    case ctl::kPortOpen: {
      Port* p = find(m.id);
      if (!p) return img::invalid_argument(img::strfmt("PORT_OPEN for no port %u", m.id));
      if (!p->ready) {
        return img::invalid_argument(img::strfmt("PORT_OPEN for port %u before it is ready", m.id));
      }
      p->guest_open = p->d.console || m.value != 0;
      return {};
    }
    default:
      return img::invalid_argument(img::strfmt("event %u (%s) from the driver: not one it sends",
                                               m.event, event_name(m.event)));
  }
}

void PortControl::set_host_connected(uint32_t id, bool connected, std::vector<ControlMsg>& out) {
  Port* p = find(id);
  if (!p || p->host_connected == connected) return;
  p->host_connected = connected;
  if (p->ready) out.push_back({id, ctl::kPortOpen, static_cast<uint16_t>(connected ? 1 : 0), {}});
}

void PortControl::resize(uint16_t cols, uint16_t rows, std::vector<ControlMsg>& out) {
  cols_ = cols;
  rows_ = rows;
  for (const Port& p : ports_)
    if (p.d.console && p.ready) out.push_back(resize_msg(p.d.id));
}

bool PortControl::guest_open(uint32_t id) const {
  const Port* p = find(id);
  return p && p->ready && p->guest_open;
}

bool PortControl::port_ready(uint32_t id) const {
  const Port* p = find(id);
  return p && p->ready;
}

void PortControl::reset() {
  device_ready_ = false;
  for (Port& p : ports_) {
    p.ready = false;
    p.guest_open = false;
  }
}

}  // namespace vmm::virtio::console
