// The host end of a balloon check (testdata/linux-guest/plan.h, check=balloon): a thread that
// watches the guest's console output (vmm's stdout, in a file) for the guest's "ready" line,
// then asks over the control socket for `bytes` back, waits for the guest's "inflated" line and
// for the device to hold every page, records query-balloon, lets the balloon out and records it
// again once the guest's driver has emptied it, sampling the VMM process's VmRSS at each step.
// `log` says what happened, for failure messages.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
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
  std::string log;                                            // read after finish()
  // The VMM's VmRSS in kB when the guest said ready, when the balloon was full, when it was
  // empty again; -1 where it was not read.
  long rss_ready_kb = -1, rss_inflated_kb = -1, rss_deflated_kb = -1;
  // The host's free 2 MiB huge pages (/proc/meminfo HugePages_Free) at the same steps: what a
  // --hugepages VM gives back shows there, not in its RSS.
  long huge_free_ready = -1, huge_free_inflated = -1;

  static long huge_pages_free() {
    std::ifstream f("/proc/meminfo");
    for (std::string l; std::getline(f, l);) {
      if (l.starts_with("HugePages_Free:")) return std::stol(l.substr(15));
    }
    return -1;
  }

  void start(const std::string& console_file, const std::string& control_socket, uint64_t memory,
             uint64_t bytes, const std::string& ready, const std::string& inflated_line) {
    t_ = std::thread(
        [=, this] { run(console_file, control_socket, memory, bytes, ready, inflated_line); });
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
  // The process whose command line names `socket` (the vmm behind it), or -1.
  static long find_pid(const std::string& socket) {
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      std::string n = e.path().filename();
      if (n.find_first_not_of("0123456789") != std::string::npos) continue;
      std::string cmd = slurp(e.path() / "cmdline");
      if (cmd.find(std::string("--control") + '\0' + socket + '\0') != std::string::npos &&
          cmd.find("timeout") != 0) {
        return std::stol(n);
      }
    }
    return -1;
  }
  static long rss_kb(long pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    for (std::string l; std::getline(f, l);) {
      if (l.starts_with("VmRSS:")) return std::stol(l.substr(6));
    }
    return -1;
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
  void run(const std::string& console_file, const std::string& sock, uint64_t memory,
           uint64_t bytes, const std::string& ready, const std::string& inflated_line) {
    if (!wait_for([&] { return slurp(console_file).find(ready) != std::string::npos; })) {
      log = "the guest never printed '" + ready + "'";
      return;
    }
    ControlClient c;
    if (!c.connect_to(sock, 100)) {
      log = "cannot connect to the control socket " + sock;
      return;
    }
    long pid = find_pid(sock);
    rss_ready_kb = rss_kb(pid);
    huge_free_ready = huge_pages_free();
    Json r = c.cmd("balloon", {{"value", memory - bytes}});
    log = "balloon: " + r.dump();
    if (!wait_for([&] { return slurp(console_file).find(inflated_line) != std::string::npos; })) {
      log += "; the guest never printed '" + inflated_line + "'";
      return;
    }
    inflated = wait_pages(c, bytes / 4096);
    rss_inflated_kb = rss_kb(pid);
    huge_free_inflated = huge_pages_free();
    log += "; inflated: " + inflated.dump();
    r = c.cmd("balloon", {{"value", memory}});
    log += "; let out: " + r.dump();
    deflated = wait_pages(c, 0);
    rss_deflated_kb = rss_kb(pid);
    log += "; deflated: " + deflated.dump();
    log += "; vmm pid " + std::to_string(pid) + " VmRSS " + std::to_string(rss_ready_kb) +
           " kB ready, " + std::to_string(rss_inflated_kb) + " kB inflated, " +
           std::to_string(rss_deflated_kb) + " kB deflated; HugePages_Free " +
           std::to_string(huge_free_ready) + " ready, " + std::to_string(huge_free_inflated) +
           " inflated";
  }

  std::atomic<bool> stop_{false};
  std::thread t_;
};

}  // namespace vmm_test
