#include "onebit/eval/report.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <utility>
#include <vector>

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
                               {"label", e.label},
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
      nlohmann::json greedy = nlohmann::json::array();
      for (bool g : e.greedy) greedy.push_back(g);
      nlohmann::json row = {{"loglik", ll}, {"greedy", greedy}, {"tokens", e.tokens}};
      if (t.kind == TaskKind::MultipleChoice) {
        row["gold"] = e.gold;
        row["pred"] = e.pred;
        row["pred_norm"] = e.pred_norm;
        row["pred_bytes"] = e.pred_bytes;
        row["chars"] = e.chars;
        row["bytes"] = e.bytes;
      }
      ex.push_back(row);
    }
    j["tasks"].push_back({{"task", t.name},
                          {"file", t.path},
                          {"format", t.format},
                          {"kind", t.kind == TaskKind::MultipleChoice ? "multiple_choice" : "loglikelihood"},
                          {"n", t.n},
                          {"acc", num(t.acc)},
                          {"acc_norm", num(t.acc_norm)},
                          {"acc_bytes", num(t.acc_bytes)},
                          {"acc_stderr", num(t.acc_stderr)},
                          {"acc_norm_stderr", num(t.acc_norm_stderr)},
                          {"acc_bytes_stderr", num(t.acc_bytes_stderr)},
                          {"ppl", num(t.ppl)},
                          {"scored_tokens", t.scored_tokens},
                          {"forward_tokens", t.stats.forward_tokens},
                          {"padded_tokens", t.stats.padded_tokens},
                          {"forwards", t.stats.forwards},
                          {"truncated", t.stats.truncated},
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
  double s = 0;
  int64_t n = 0;
  for (const auto& t : m.tasks) {
    if (t.kind != TaskKind::MultipleChoice) continue;
    s += norm ? t.acc_norm : t.acc;
    ++n;
  }
  return n ? s / double(n) : kNaN;
}

std::string paper_metric(const std::string& task_format) {
  for (const char* t : {"hellaswag", "piqa", "arc_easy", "arc_challenge"})
    if (task_format == t) return "acc_norm";
  return "acc";
}

double paper_value(const TaskResult& t) { return paper_metric(t.format) == "acc_norm" ? t.acc_norm : t.acc; }

std::string report_json(const EvalReport& r) {
  nlohmann::json j;
  j["format"] = "onebit-eval/1";
  const auto& s = r.settings;
  j["settings"] = {{"ppl_protocol", s.ppl_protocol}, {"seq_len", s.seq_len},   {"windows", s.windows},
                   {"batch_size", s.batch_size},     {"seed", s.seed},         {"limit", s.limit},
                   {"dtype", s.dtype},               {"device", s.device},     {"add_bos", s.add_bos},
                   {"task_batch_tokens", s.task_batch_tokens}};
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
    out += fmt("  %-28s %6s %8s %8s %8s", "task", "n", "acc", "acc_norm", "stderr");
    out += cmp ? fmt(" %8s %8s\n", "t.acc", "t.norm") : "\n";
    for (size_t i = 0; i < r.student.tasks.size(); ++i) {
      const auto& t = r.student.tasks[i];
      out += fmt("  %-28s %6lld %8.4f %8.4f %8.4f", t.name.c_str(), (long long)t.n, t.acc, t.acc_norm,
                 t.acc_stderr);
      if (cmp && i < r.teacher->tasks.size())
        out += fmt(" %8.4f %8.4f", r.teacher->tasks[i].acc, r.teacher->tasks[i].acc_norm);
      if (t.kind == TaskKind::Loglikelihood) {
        out += fmt("   ppl %.4f", t.ppl);
        if (cmp && i < r.teacher->tasks.size()) out += fmt(" (teacher %.4f)", r.teacher->tasks[i].ppl);
      }
      out += "\n";
    }
    out += fmt("  %-28s %6s %8.4f %8.4f %8s", "average (multiple choice)", "", average_accuracy(r.student, false),
               average_accuracy(r.student, true), "");
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

std::string format_paper_table(const EvalReport& r) {
  static const std::vector<std::pair<std::string, std::string>> kCols = {
      {"winogrande", "WinoGrande"}, {"hellaswag", "HellaSwag"}, {"piqa", "PIQA"},
      {"boolq", "BoolQ"},           {"arc_easy", "ARC-e"},      {"arc_challenge", "ARC-c"}};
  auto ppl_of = [](const ModelEval& m, const char* label) {
    for (const auto& e : m.ppl)
      if (e.label == label) return e.result.ppl;
    return kNaN;
  };
  // The six accuracies (percent) of one model, NaN where the task was not run, and their mean
  // over the tasks that were.
  auto accs = [&](const ModelEval& m) {
    std::vector<double> v;
    double sum = 0;
    int64_t n = 0;
    for (const auto& [fmt_name, title] : kCols) {
      double x = kNaN;
      for (const auto& t : m.tasks)
        if (t.format == fmt_name) x = 100 * paper_value(t);
      v.push_back(x);
      if (std::isfinite(x)) sum += x, ++n;
    }
    v.push_back(n ? sum / double(n) : kNaN);
    return v;
  };
  auto cell = [](double x, const char* f) { return std::isfinite(x) ? fmt(f, x) : fmt("%8s", "-"); };

  std::string out = fmt("Paper table (perplexity at seq_len %lld; accuracy in %%, metric per column)\n",
                        (long long)r.settings.seq_len);
  out += fmt("  %-10s %8s %8s", "model", "Wiki2", "C4");
  for (const auto& [fmt_name, title] : kCols) out += fmt(" %10s", title.c_str());
  out += fmt(" %8s\n", "Avg.");
  out += fmt("  %-10s %8s %8s", "", "ppl", "ppl");
  for (const auto& [fmt_name, title] : kCols) out += fmt(" %10s", paper_metric(fmt_name).c_str());
  out += fmt(" %8s\n", "");
  auto row = [&](const char* name, const ModelEval& m) {
    std::string s = fmt("  %-10s %s %s", name, cell(ppl_of(m, "wiki2"), "%8.2f").c_str(),
                        cell(ppl_of(m, "c4"), "%8.2f").c_str());
    const auto v = accs(m);
    for (size_t i = 0; i < kCols.size(); ++i) s += "   " + cell(v[i], "%8.2f").substr(1);
    return s + " " + cell(v.back(), "%8.2f") + "\n";
  };
  if (r.teacher) out += row("teacher", *r.teacher);
  out += row(r.teacher ? "student" : "model", r.student);
  if (r.teacher) {
    const auto vs = accs(r.student), vt = accs(*r.teacher);
    std::string s = fmt("  %-10s %s %s", "retention", cell(ratio(ppl_of(*r.teacher, "wiki2"), ppl_of(r.student, "wiki2")), "%8.3f").c_str(),
                        cell(ratio(ppl_of(*r.teacher, "c4"), ppl_of(r.student, "c4")), "%8.3f").c_str());
    for (size_t i = 0; i < kCols.size(); ++i) s += "   " + cell(ratio(vs[i], vt[i]), "%8.3f").substr(1);
    out += s + " " + cell(ratio(vs.back(), vt.back()), "%8.3f") + "\n";
    out += "  (retention: teacher/student for perplexity, student/teacher for accuracy)\n";
  }
  return out;
}

}  // namespace onebit::eval
