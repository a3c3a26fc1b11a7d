#include "onebit/eval/report.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <limits>

namespace onebit::eval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

std::string base(const std::string& path) { return std::filesystem::path(path).filename().string(); }

double ratio(double a, double b) { return b != 0 && std::isfinite(a) && std::isfinite(b) ? a / b : kNaN; }

// NaN/inf become JSON null.
nlohmann::json num(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); }

nlohmann::json model_json(const ModelEval& m) {
  nlohmann::json j;
  j["model"] = m.model;
  j["perplexity"] = nlohmann::json::array();
  for (const auto& e : m.ppl) {
    j["perplexity"].push_back({{"file", e.file},
                               {"protocol", ppl_protocol_name(e.options.protocol)},
                               {"seq_len", e.options.seq_len},
                               {"windows", e.result.windows},
                               {"seed", e.options.seed},
                               {"input_tokens", e.result.input_tokens},
                               {"predicted_tokens", e.result.predicted_tokens},
                               {"mean_nll", num(e.result.mean_nll)},
                               {"ppl", num(e.result.ppl)}});
  }
  j["tasks"] = nlohmann::json::array();
  for (const auto& t : m.tasks) {
    nlohmann::json ex = nlohmann::json::array();
    for (const auto& e : t.examples) {
      nlohmann::json ll = nlohmann::json::array();
      for (double x : e.loglik) ll.push_back(num(x));
      ex.push_back({{"gold", e.gold}, {"pred", e.pred}, {"pred_norm", e.pred_norm},
                    {"loglik", ll}, {"bytes", e.bytes}, {"tokens", e.tokens}});
    }
    j["tasks"].push_back({{"task", t.name},
                          {"file", t.path},
                          {"format", task_format_name(t.format)},
                          {"n", t.n},
                          {"acc", t.acc},
                          {"acc_norm", t.acc_norm},
                          {"acc_stderr", t.acc_stderr},
                          {"acc_norm_stderr", t.acc_norm_stderr},
                          {"scored_tokens", t.scored_tokens},
                          {"forward_tokens", t.forward_tokens},
                          {"examples", ex}});
  }
  if (m.tasks.empty()) {
    j["average"] = nullptr;
  } else {
    j["average"] = {{"tasks", m.tasks.size()},
                    {"acc", num(average_accuracy(m, false))},
                    {"acc_norm", num(average_accuracy(m, true))}};
  }
  return j;
}

}  // namespace

double average_accuracy(const ModelEval& m, bool norm) {
  if (m.tasks.empty()) return kNaN;
  double s = 0;
  for (const auto& t : m.tasks) s += norm ? t.acc_norm : t.acc;
  return s / double(m.tasks.size());
}

std::string report_json(const EvalReport& r) {
  nlohmann::json j;
  j["format"] = "onebit-eval/1";
  const auto& s = r.settings;
  j["settings"] = {{"ppl_protocol", s.ppl_protocol}, {"seq_len", s.seq_len},   {"windows", s.windows},
                   {"batch_size", s.batch_size},     {"seed", s.seed},         {"limit", s.limit},
                   {"dtype", s.dtype},               {"device", s.device}};
  j["student"] = model_json(r.student);
  if (r.teacher) {
    j["teacher"] = model_json(*r.teacher);
    nlohmann::json ppl = nlohmann::json::array();
    for (size_t i = 0; i < r.student.ppl.size() && i < r.teacher->ppl.size(); ++i)
      ppl.push_back({{"file", r.student.ppl[i].file},
                     {"teacher_over_student",
                      num(ratio(r.teacher->ppl[i].result.ppl, r.student.ppl[i].result.ppl))}});
    j["retention"] = {
        {"perplexity", ppl},
        {"acc", num(ratio(average_accuracy(r.student, false), average_accuracy(*r.teacher, false)))},
        {"acc_norm", num(ratio(average_accuracy(r.student, true), average_accuracy(*r.teacher, true)))}};
  }
  return j.dump(2) + "\n";
}

std::string format_table(const EvalReport& r) {
  const bool cmp = r.teacher.has_value();
  const auto& s = r.settings;
  std::string out = fmt("model    %s\n", r.student.model.c_str());
  if (cmp) out += fmt("teacher  %s\n", r.teacher->model.c_str());
  out += fmt("dtype %s, device %s\n", s.dtype.c_str(), s.device.c_str());

  if (!r.student.ppl.empty()) {
    out += fmt("\nPerplexity (protocol %s, seq_len %lld)\n", s.ppl_protocol.c_str(), (long long)s.seq_len);
    out += fmt("  %-28s %8s %10s %10s", "file", "windows", "tokens", cmp ? "student" : "ppl");
    out += cmp ? fmt(" %10s %10s\n", "teacher", "t/s") : "\n";
    for (size_t i = 0; i < r.student.ppl.size(); ++i) {
      const auto& e = r.student.ppl[i];
      out += fmt("  %-28s %8lld %10lld %10.4f", base(e.file).c_str(), (long long)e.result.windows,
                 (long long)e.result.predicted_tokens, e.result.ppl);
      if (cmp && i < r.teacher->ppl.size()) {
        const double t = r.teacher->ppl[i].result.ppl;
        out += fmt(" %10.4f %10.4f", t, ratio(t, e.result.ppl));
      }
      out += "\n";
    }
  }

  if (!r.student.tasks.empty()) {
    out += fmt("\nZero-shot accuracy%s\n", s.limit > 0 ? fmt(" (first %lld examples per task)", (long long)s.limit).c_str() : "");
    out += fmt("  %-28s %6s %8s %8s", "task", "n", "acc", "acc_norm");
    out += cmp ? fmt(" %8s %8s\n", "t.acc", "t.norm") : "\n";
    for (size_t i = 0; i < r.student.tasks.size(); ++i) {
      const auto& t = r.student.tasks[i];
      out += fmt("  %-28s %6lld %8.4f %8.4f", t.name.c_str(), (long long)t.n, t.acc, t.acc_norm);
      if (cmp && i < r.teacher->tasks.size())
        out += fmt(" %8.4f %8.4f", r.teacher->tasks[i].acc, r.teacher->tasks[i].acc_norm);
      out += "\n";
    }
    out += fmt("  %-28s %6s %8.4f %8.4f", "average", "", average_accuracy(r.student, false),
               average_accuracy(r.student, true));
    if (cmp) {
      out += fmt(" %8.4f %8.4f\n", average_accuracy(*r.teacher, false), average_accuracy(*r.teacher, true));
      out += fmt("  %-28s %6s %8.4f %8.4f\n", "retention (student/teacher)", "",
                 ratio(average_accuracy(r.student, false), average_accuracy(*r.teacher, false)),
                 ratio(average_accuracy(r.student, true), average_accuracy(*r.teacher, true)));
    } else {
      out += "\n";
    }
  }
  return out;
}

}  // namespace onebit::eval
