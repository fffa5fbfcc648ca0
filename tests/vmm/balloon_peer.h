// The host end of a balloon check (testdata/linux-guest/plan.h, check=balloon): a thread that
// watches the guest's console output (vmm's stdout, in a file) for the guest's "ready" line,
// then asks over the control socket for `bytes` back, waits for the guest's "inflated" line and
// for the device to hold every page, records query-balloon, lets the balloon out and records it
// again once the guest's driver has emptied it. `log` says what happened, for failure messages.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "control_client.h"
#include "run_shell.h"

namespace vmm_test {

struct BalloonPeer {
  using Json = nlohmann::json;
  Json inflated = Json::object(), deflated = Json::object();  // query-balloon replies
  std::string log;  // read after finish()

  void start(const std::string& console_file, const std::string& control_socket, uint64_t memory,
             uint64_t bytes, const std::string& ready, const std::string& inflated_line) {
    t_ = std::thread([=, this] { run(console_file, control_socket, memory, bytes, ready, inflated_line); });
  }
  // Stops waiting (the VM ended) and joins the thread.
  void finish() {
    stop_ = true;
    if (t_.joinable()) t_.join();
  }
  ~BalloonPeer() { finish(); }

 private:
  // Polls every 200 ms until `done` or finish(); false if finish() came first.
  bool wait_for(const std::function<bool()>& done) {
    while (!stop_) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }
  // Polls query-balloon until balloon_pages is `pages`; the last reply.
  Json wait_pages(ControlClient& c, uint64_t pages) {
    Json q;
    wait_for([&] {
      Json r = c.cmd("query-balloon");
      if (r.is_discarded() || !r.contains("return")) return true;  // the VM is gone
      q = r["return"];
      return q.value("balloon_pages", uint64_t{0}) == pages;
    });
    return q;
  }
  void run(const std::string& console_file, const std::string& sock, uint64_t memory, uint64_t bytes,
           const std::string& ready, const std::string& inflated_line) {
    if (!wait_for([&] { return slurp(console_file).find(ready) != std::string::npos; })) {
      log = "the guest never printed '" + ready + "'";
      return;
    }
    ControlClient c;
    if (!c.connect_to(sock, 100)) {
      log = "cannot connect to the control socket " + sock;
      return;
    }
    Json r = c.cmd("balloon", {{"value", memory - bytes}});
    log = "balloon: " + r.dump();
    if (!wait_for([&] { return slurp(console_file).find(inflated_line) != std::string::npos; })) {
      log += "; the guest never printed '" + inflated_line + "'";
      return;
    }
    inflated = wait_pages(c, bytes / 4096);
    log += "; inflated: " + inflated.dump();
    r = c.cmd("balloon", {{"value", memory}});
    log += "; let out: " + r.dump();
    deflated = wait_pages(c, 0);
    log += "; deflated: " + deflated.dump();
  }

  std::atomic<bool> stop_{false};
  std::thread t_;
};

}  // namespace vmm_test
