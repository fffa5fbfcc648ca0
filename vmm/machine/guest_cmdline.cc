#include "machine/guest_cmdline.h"

#include <vector>

namespace vmm {
namespace {

struct Token {
  size_t begin, end;  // [begin, end) in the command line
};

// Splits like the kernel's next_arg(): on spaces, a double-quoted stretch stays in one token.
std::vector<Token> tokenize(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    if (i == s.size()) break;
    size_t b = i;
    bool quoted = false;
    while (i < s.size() && (quoted || s[i] != ' ')) {
      if (s[i] == '"') quoted = !quoted;
      ++i;
    }
    out.push_back({b, i});
  }
  return out;
}

bool list_has(std::string_view list, std::string_view item) {
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string_view::npos) comma = list.size();
    if (list.substr(pos, comma - pos) == item) return true;
    pos = comma + 1;
  }
  return false;
}

}  // namespace

std::string pvm_workaround_params() {
  return compose_guest_cmdline("", true, true, true).added;
}

GuestCmdline compose_guest_cmdline(std::string_view user, bool linux_guest, bool kvm_pvm,
                                   bool workarounds, uint32_t tsc_khz) {
  GuestCmdline r{std::string(user), ""};
  if (!linux_guest || !kvm_pvm || !workarounds) return r;

  // Only the kernel's part counts: after "--" the words are init's.
  std::vector<Token> toks = tokenize(user);
  size_t kernel_end = user.size();
  size_t ntok = toks.size();
  for (size_t i = 0; i < toks.size(); ++i) {
    if (user.substr(toks[i].begin, toks[i].end - toks[i].begin) == "--") {
      kernel_end = toks[i].begin;
      ntok = i;
      break;
    }
  }
  auto word = [&](size_t i) { return user.substr(toks[i].begin, toks[i].end - toks[i].begin); };
  auto has_word = [&](std::string_view w) {
    for (size_t i = 0; i < ntok; ++i)
      if (word(i) == w) return true;
    return false;
  };

  std::vector<std::string> add;
  for (std::string_view f : kPvmFlags)
    if (!has_word(f)) add.emplace_back(f);

  constexpr std::string_view kKey = "clearcpuid=";
  std::string head(user.substr(0, kernel_end));
  std::string tail(user.substr(kernel_end));
  std::string missing;  // features the user's clearcpuid= lacks, comma-separated
  size_t user_clear = ntok;
  for (size_t i = 0; i < ntok; ++i)
    if (word(i).starts_with(kKey)) user_clear = i;  // the kernel reads the last one
  std::string_view have = user_clear < ntok ? word(user_clear).substr(kKey.size()) : "";
  for (std::string_view f : kPvmClearCpuid) {
    if (list_has(have, f)) continue;
    if (!missing.empty()) missing += ',';
    missing += f;
  }
  if (!missing.empty()) {
    if (user_clear < ntok) {
      // Merge into the user's list in place: two clearcpuid= would leave one of them unread.
      std::string extra = (have.empty() ? "" : ",") + missing;
      head.insert(toks[user_clear].end, extra);
      r.added = std::string(kKey) + "+" + missing;
    } else {
      add.push_back(std::string(kKey) + missing);
    }
  }

  constexpr std::string_view kTscKey = "tsc_early_khz=";
  bool user_tsc = false;
  for (size_t i = 0; i < ntok; ++i) user_tsc = user_tsc || word(i).starts_with(kTscKey);
  if (tsc_khz != 0 && !user_tsc) add.push_back(std::string(kTscKey) + std::to_string(tsc_khz));
  // tsc=unstable: keep the TSC out of the clocksource list (see the header); the user's own
  // tsc= option wins.
  bool user_tsc_opt = false;
  for (size_t i = 0; i < ntok; ++i) user_tsc_opt = user_tsc_opt || word(i).starts_with("tsc=");
  if (tsc_khz != 0 && !user_tsc_opt) add.emplace_back("tsc=unstable");

  std::string appended;
  for (const std::string& a : add) appended += (appended.empty() ? "" : " ") + a;
  if (!appended.empty()) {
    while (!head.empty() && head.back() == ' ') head.pop_back();
    head += (head.empty() ? "" : " ") + appended;
    if (!tail.empty()) head += ' ';
    r.added = appended + (r.added.empty() ? "" : " " + r.added);
  }
  r.cmdline = head + tail;
  return r;
}

}  // namespace vmm
