// Running onebit-train as a subprocess on a tiny random LLaMA teacher: shared by the program
// tests (test_train_program.cpp) and the fault-injection tests (test_faults.cpp).
#pragma once
#include <torch/torch.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "onebit/models/loader.h"
#include "tests/data/tmpdir.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

namespace onebit::test {

inline std::string train_program() { return (binary_dir() / "onebit-train").string(); }

// Runs onebit-train with args; returns its exit status and stdout+stderr. `prefix` goes before
// the program (e.g. a resource limit).
inline std::pair<int, std::string> run_train(const std::string& args, const std::string& prefix = "") {
  const std::string cmd = prefix + train_program() + " " + args + " 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  while (p && std::fgets(buf.data(), buf.size(), p)) out += buf.data();
  const int rc = p ? ::pclose(p) : -1;
  return {rc, out};
}

// A tiny random LLaMA teacher folder (config.json + model.safetensors; no tokenizer needed
// with self-sampled data and no eval text).
inline std::string tiny_teacher(const TempDir& dir) {
  torch::manual_seed(21);
  const std::string path = dir.str("teacher");
  onebit::models::save_pretrained(onebit::models::build_model(tiny_llama_config()), path);
  return path;
}

// A config for a few-second run: 16 self-sampled sequences, blocks of 32 tokens, batch 2.
inline std::string tiny_config(const TempDir& dir, const std::string& teacher) {
  const std::string cfg = dir.str("tiny.yaml");
  std::ofstream(cfg) << "model:\n  teacher: " << teacher << "\n  dtype: fp32\n  device: cpu\n"
                     << "data:\n  num_samples: 16\n  sample_length: 48\n  sample_batch: 16\n  seq_len: 32\n"
                     << "  batch_size: 2\n  sample_dir: " << dir.str("samples") << "\n"
                     << "kd:\n  chunk_tokens: 32\n"
                     << "optim:\n  lr: 2.0e-3\n  warmup_steps: 0\n  schedule: constant\n"
                     << "train:\n  log_every: 1\n";
  return cfg;
}

inline std::vector<nlohmann::json> step_lines(const std::string& metrics) {
  std::ifstream in(metrics);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j);
  }
  return out;
}

}  // namespace onebit::test
