#include "onebit/eval/tasks.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>

#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"
#include "onebit/util/strings.h"

namespace onebit::eval {

namespace {

using json = nlohmann::json;

bool ascii_blank(const std::string& s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\v' && c != '\f') return false;
  return true;
}

// MosaicML's delimiter: " " + text unless text already starts with whitespace.
std::string with_delimiter(const std::string& text) {
  return leading_space_bytes(text) > 0 ? text : " " + text;
}

std::string keys_of(const json& j) {
  std::string out;
  for (auto it = j.begin(); it != j.end(); ++it) out += (out.empty() ? "" : ", ") + it.key();
  return out.empty() ? "none" : out;
}

const json& field(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  OB_CHECK(it != j.end(), where, ": missing key \"", key, "\"");
  return *it;
}

std::string string_field(const json& j, const char* key, const std::string& where) {
  const auto& v = field(j, key, where);
  OB_CHECK(v.is_string(), where, ": \"", key, "\" must be a string");
  return v.get<std::string>();
}

std::vector<std::string> string_list(const json& v, const std::string& key, const std::string& where,
                                     size_t min_size = 2) {
  OB_CHECK(v.is_array(), where, ": \"", key, "\" must be a list of strings");
  std::vector<std::string> out;
  for (const auto& e : v) {
    OB_CHECK(e.is_string(), where, ": \"", key, "\" must be a list of strings");
    out.push_back(e.get<std::string>());
  }
  OB_CHECK(out.size() >= min_size, where, ": \"", key, "\" needs at least ", min_size, " entries (has ",
           out.size(), ")");
  return out;
}

// An integer label, or a string of decimal digits (HellaSwag's "label": "2"), in [0, n).
int64_t label_field(const json& j, const char* key, size_t n, const std::string& where) {
  const auto& v = field(j, key, where);
  int64_t g = -1;
  if (v.is_number_integer()) {
    g = v.get<int64_t>();
  } else if (v.is_string() && !v.get<std::string>().empty() &&
             v.get<std::string>().find_first_not_of("0123456789") == std::string::npos &&
             v.get<std::string>().size() < 10) {
    g = std::stoll(v.get<std::string>());
  } else {
    fail(where, ": \"", key, "\" must be an integer");
  }
  OB_CHECK(g >= 0 && g < int64_t(n), where, ": ", key, " ", g, " out of range for ", n, " choices");
  return g;
}

// Calls `row(json, where, line)` for the JSON object on each non-blank line, up to `limit` rows.
void for_each_row(const std::string& path, int64_t limit,
                  const std::function<void(const json&, const std::string&, int64_t)>& row) {
  OB_CHECK(!ends_with(path, ".parquet"), path,
           ": parquet is not read directly; convert it first: "
           "python3 scripts/parquet_to_jsonl.py FILE.parquet OUT.jsonl (needs pyarrow)");
  const std::string text = io::read_file(path);
  OB_CHECK(!ascii_blank(text), path, ": empty task file");
  int64_t rows = 0;
  size_t pos = 0;
  for (int64_t line_no = 1; pos <= text.size(); ++line_no) {
    if (limit > 0 && rows >= limit) break;
    const size_t nl = text.find('\n', pos);
    const std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() + 1 : nl + 1;
    if (ascii_blank(line)) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      fail(where, ": malformed JSON line (", e.what(), ")");
    }
    OB_CHECK(j.is_object(), where, ": expected a JSON object");
    row(j, where, line_no);
    ++rows;
  }
  OB_CHECK(rows > 0, path, ": no examples");
}

// Python str.strip() (Unicode whitespace).
std::string py_strip(const std::string& s) {
  const size_t head = leading_space_bytes(s);
  return head == s.size() ? std::string() : s.substr(head, s.size() - head - trailing_space_bytes(s));
}

// Python str.capitalize() on ASCII letters (first upper, the rest lower); other bytes kept.
std::string py_capitalize(const std::string& s) {
  std::string out = s;
  for (size_t i = 0; i < out.size(); ++i) {
    const char c = out[i];
    if (i == 0 && c >= 'a' && c <= 'z') out[i] = char(c - 'a' + 'A');
    if (i > 0 && c >= 'A' && c <= 'Z') out[i] = char(c - 'A' + 'a');
  }
  return out;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  size_t i = 0;
  while (true) {
    const size_t j = s.find(from, i);
    if (j == std::string::npos) break;
    out += s.substr(i, j - i) + to;
    i = j + from.size();
  }
  return out + s.substr(i);
}

// Python str.split(" ") (one space is the separator; empty fields kept).
std::vector<std::string> split_space(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (true) {
    const size_t j = s.find(' ', i);
    out.push_back(s.substr(i, j == std::string::npos ? std::string::npos : j - i));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return out;
}

TaskExample multiple_choice(const std::string& context, const std::vector<std::string>& choices, int64_t gold,
                            int64_t line) {
  TaskExample ex;
  for (const auto& c : choices) {
    ex.contexts.push_back(context);
    ex.continuations.push_back(" " + c);  // lm-eval's target_delimiter
    ex.choices.push_back(c);
  }
  ex.gold = gold;
  ex.line = line;
  return ex;
}

using RowReader = std::function<TaskExample(const json&, const std::string&, int64_t)>;

struct NamedTask {
  std::string name, format;
  TaskKind kind;
  RowReader read;
};

const std::vector<NamedTask>& registry() {
  static const std::vector<NamedTask> tasks = {
      {"piqa", "piqa", TaskKind::MultipleChoice,
       [](const json& j, const std::string& w, int64_t line) {
         const std::vector<std::string> sols = {string_field(j, "sol1", w), string_field(j, "sol2", w)};
         return multiple_choice("Question: " + string_field(j, "goal", w) + "\nAnswer:", sols,
                                label_field(j, "label", 2, w), line);
       }},
      {"hellaswag", "hellaswag", TaskKind::MultipleChoice,
       [](const json& j, const std::string& w, int64_t line) {
         const std::string ctx = string_field(j, "ctx_a", w) + " " + py_capitalize(string_field(j, "ctx_b", w));
         const std::string query = hellaswag_preprocess(string_field(j, "activity_label", w) + ": " + ctx);
         std::vector<std::string> endings;
         for (const auto& e : string_list(field(j, "endings", w), "endings", w)) endings.push_back(hellaswag_preprocess(e));
         return multiple_choice(query, endings, label_field(j, "label", endings.size(), w), line);
       }},
      {"winogrande", "winogrande", TaskKind::MultipleChoice,
       [](const json& j, const std::string& w, int64_t line) {
         const std::string sentence = string_field(j, "sentence", w);
         const size_t idx = sentence.find('_');
         OB_CHECK(idx != std::string::npos, w, ": \"sentence\" has no \"_\" blank");
         const std::string answer = string_field(j, "answer", w);
         OB_CHECK(answer == "1" || answer == "2", w, ": \"answer\" must be \"1\" or \"2\" (got \"", answer, "\")");
         TaskExample ex;
         const std::string target = " " + py_strip(sentence.substr(idx + 1));
         for (const char* key : {"option1", "option2"}) {
           ex.contexts.push_back(sentence.substr(0, idx) + string_field(j, key, w));
           ex.continuations.push_back(target);
           ex.choices.push_back(ex.contexts.back());  // lm-eval's doc_to_choice (multiple inputs)
         }
         ex.gold = answer == "1" ? 0 : 1;
         ex.line = line;
         return ex;
       }},
      {"boolq", "boolq", TaskKind::MultipleChoice,
       [](const json& j, const std::string& w, int64_t line) {
         int64_t gold;
         if (j.contains("label")) {
           gold = label_field(j, "label", 2, w);
         } else {
           const auto& a = field(j, "answer", w);  // google/boolq rows: "answer": true/false
           OB_CHECK(a.is_boolean(), w, ": \"answer\" must be true or false");
           gold = a.get<bool>() ? 1 : 0;
         }
         return multiple_choice(string_field(j, "passage", w) + "\nQuestion: " + string_field(j, "question", w) +
                                    "?\nAnswer:",
                                {"no", "yes"}, gold, line);
       }},
      {"arc_easy", "arc_easy", TaskKind::MultipleChoice, nullptr},
      {"arc_challenge", "arc_challenge", TaskKind::MultipleChoice, nullptr},
      {"lambada", "lambada_openai", TaskKind::Loglikelihood,
       [](const json& j, const std::string& w, int64_t line) {
         auto words = split_space(string_field(j, "text", w));
         std::string ctx;
         for (size_t i = 0; i + 1 < words.size(); ++i) ctx += (i ? " " : "") + words[i];
         TaskExample ex;
         ex.contexts = {ctx};
         ex.continuations = {" " + words.back()};
         ex.choices = {words.back()};
         ex.line = line;
         return ex;
       }},
  };
  return tasks;
}

TaskExample read_arc(const json& j, const std::string& w, int64_t line) {
  const auto& ch = field(j, "choices", w);
  OB_CHECK(ch.is_object(), w, ": \"choices\" must be an object with \"text\" and \"label\" lists");
  const auto text = string_list(field(ch, "text", w + " choices"), "choices.text", w);
  const auto labels = string_list(field(ch, "label", w + " choices"), "choices.label", w);
  OB_CHECK(text.size() == labels.size(), w, ": ", text.size(), " choices.text but ", labels.size(),
           " choices.label");
  const std::string key = string_field(j, "answerKey", w);
  int64_t gold = -1;
  for (size_t i = 0; i < labels.size() && gold < 0; ++i)
    if (labels[i] == key) gold = int64_t(i);
  OB_CHECK(gold >= 0, w, ": answerKey \"", key, "\" is not in choices.label");
  return multiple_choice("Question: " + string_field(j, "question", w) + "\nAnswer:", text, gold, line);
}

const NamedTask* find_named(const std::string& name) {
  for (const auto& t : registry())
    if (t.name == name || (name == "lambada_openai" && t.name == "lambada")) return &t;
  return nullptr;
}

std::string known_names() {
  std::string s;
  for (const auto& n : named_tasks()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

const std::vector<std::string>& named_tasks() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& t : registry()) v.push_back(t.name);
    return v;
  }();
  return names;
}

bool is_named_task(const std::string& name) { return find_named(name) != nullptr; }

std::string hellaswag_preprocess(const std::string& text) {
  std::string t = replace_all(py_strip(text), " [title]", ". ");
  std::string out;  // re.sub("\\[.*?\\]", "", t): '.' does not match '\n'
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '[') {
      size_t j = i + 1;
      while (j < t.size() && t[j] != ']' && t[j] != '\n') ++j;
      if (j < t.size() && t[j] == ']') {
        i = j;
        continue;
      }
    }
    out += t[i];
  }
  return replace_all(out, "  ", " ");
}

Task load_task(const std::string& path, int64_t limit) {
  Task task;
  task.path = path;
  task.name = std::filesystem::path(path).stem().string();
  bool detected = false;
  bool schema = false;
  for_each_row(path, limit, [&](const json& j, const std::string& where, int64_t line) {
    if (!detected) {
      if (j.contains("query") && j.contains("choices")) {
        schema = false;
      } else if (j.contains("context_options") && j.contains("continuation")) {
        schema = true;
      } else {
        fail(where, ": unknown task format (keys: ", keys_of(j),
             "); expected {query, choices, gold} (multiple_choice) or "
             "{context_options, continuation, gold} (schema), or name the task: --tasks NAME=FILE with NAME one of ",
             known_names());
      }
      task.format = schema ? "schema" : "multiple_choice";
      detected = true;
    }
    TaskExample ex;
    ex.line = line;
    if (!schema) {
      const std::string query = string_field(j, "query", where);
      for (auto& c : string_list(field(j, "choices", where), "choices", where)) {
        ex.contexts.push_back(query);
        ex.continuations.push_back(with_delimiter(c));
        ex.choices.push_back(c);
      }
    } else {
      const std::string cont = with_delimiter(string_field(j, "continuation", where));
      for (auto& c : string_list(field(j, "context_options", where), "context_options", where)) {
        ex.contexts.push_back(c);
        ex.continuations.push_back(cont);
        ex.choices.push_back(c);
      }
    }
    const auto& g = field(j, "gold", where);
    OB_CHECK(g.is_number_integer(), where, ": \"gold\" must be an integer");
    ex.gold = g.get<int64_t>();
    OB_CHECK(ex.gold >= 0 && ex.gold < int64_t(ex.contexts.size()), where, ": gold ", ex.gold,
             " out of range for ", ex.contexts.size(), " choices");
    task.examples.push_back(std::move(ex));
  });
  return task;
}

Task load_named_task(const std::string& name, const std::string& path, int64_t limit) {
  const NamedTask* t = find_named(name);
  OB_CHECK(t, "unknown task '", name, "' (known: ", known_names(), ")");
  Task task;
  task.name = t->name;
  task.path = path;
  task.format = t->format;
  task.kind = t->kind;
  const RowReader read = t->read ? t->read : RowReader(read_arc);
  for_each_row(path, limit, [&](const json& j, const std::string& where, int64_t line) {
    task.examples.push_back(read(j, where, line));
  });
  return task;
}

Task load_task_arg(const std::string& arg, int64_t limit) {
  const size_t eq = arg.find('=');
  if (eq != std::string::npos && is_named_task(arg.substr(0, eq)))
    return load_named_task(arg.substr(0, eq), arg.substr(eq + 1), limit);
  OB_CHECK(eq == std::string::npos || std::filesystem::exists(arg), "--tasks ", arg, ": unknown task '",
           arg.substr(0, eq), "' (known: ", known_names(), ")");
  return load_task(arg, limit);
}

}  // namespace onebit::eval
