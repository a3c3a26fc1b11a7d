// onebit-export: a trained OneBit student → a deployable folder with packed 1-bit weights
// (docs/deployment.md). Prints the storage measured from the written files.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "onebit/config/train_config.h"
#include "onebit/core/error.h"
#include "onebit/export/export.h"
#include "onebit/export/format.h"
#include "onebit/models/loader.h"
#include "train/cli.h"

using namespace onebit;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  return guarded_main("onebit-export", [&] {
    CLI::App app{"Export a OneBit student as a folder with packed 1-bit weights (config.json with a\n"
                 "quantization_config, model.safetensors, tokenizer files, modeling_onebit.py) that\n"
                 "onebit-generate, onebit-eval, the library and transformers (trust_remote_code) load."};
    std::string model, out, dtype = "fp16", tokenizer_dir;
    double max_shard_gb = 2.0;
    bool overwrite = false;
    app.add_option("--model", model,
                   "student folder (config.json with a 'onebit' key), or an onebit-train output_dir "
                   "(its student/ is exported, tokenizer files also come from its teacher)")
        ->required();
    app.add_option("--out", out, "output folder (created; must be absent or empty unless --overwrite)")->required();
    app.add_option("--dtype", dtype, "g, h, bias, embeddings, lm_head and norms: fp16 | bf16 | fp32")
        ->capture_default_str();
    app.add_option("--tokenizer", tokenizer_dir, "take the tokenizer files from this folder instead");
    app.add_option("--max-shard-gb", max_shard_gb, "shard model.safetensors above this size (GB)")
        ->capture_default_str();
    app.add_flag("--overwrite", overwrite, "replace a non-empty --out folder");
    ONEBIT_PARSE("onebit-export", app, argc, argv);

    packed::ExportOptions opts;
    opts.dtype = packed::parse_scale_dtype(dtype, "--dtype");
    OB_CHECK(max_shard_gb > 0, "--max-shard-gb must be positive, got ", max_shard_gb);
    opts.max_shard_bytes = int64_t(max_shard_gb * 1e9);
    opts.overwrite = overwrite;

    fs::path student = model;
    if (!fs::exists(student / "config.json") && fs::exists(student / "student" / "config.json")) {
      const fs::path run = student;
      student = run / "student";
      if (fs::exists(run / "config.yaml")) {
        const auto teacher = config::load_train_config((run / "config.yaml").string()).model.teacher;
        if (!teacher.empty() && fs::is_directory(teacher)) opts.tokenizer_dirs.push_back(teacher);
      }
    }
    OB_CHECK(fs::exists(student / "config.json"), "--model: '", model,
             "' holds neither config.json nor student/config.json");
    opts.tokenizer_dirs.push_back(student.string());
    if (!tokenizer_dir.empty()) opts.tokenizer_dirs = {tokenizer_dir};

    const auto m = models::load_pretrained(student.string(), {torch::kCPU, torch::kFloat32});
    const auto s = packed::export_model(*m, out, opts);
    const double fp16_bytes = 2.0 * double(s.model_params);
    std::printf("exported %s -> %s (%lld packed linears, %lld safetensors file%s)\n", student.string().c_str(),
                out.c_str(), (long long)s.layers, (long long)s.shards, s.shards == 1 ? "" : "s");
    std::printf("  linear layers: %lld parameters, %.3f MB, %.4f bits/parameter\n", (long long)s.linear_params,
                s.linear_bytes / 1e6, s.linear_bits());
    std::printf("  whole model:   %lld parameters, %.3f MB of tensors (%.3f MB on disk), %.4f bits/parameter, "
                "%.2fx smaller than fp16\n",
                (long long)s.model_params, s.model_bytes / 1e6, s.file_bytes / 1e6, s.model_bits(),
                fp16_bytes / double(std::max<int64_t>(s.model_bytes, 1)));
    std::string toks;
    for (const auto& f : s.tokenizer_files) toks += (toks.empty() ? "" : ", ") + f;
    std::printf("  tokenizer files: %s\n", toks.empty() ? "(none)" : toks.c_str());
    return 0;
  });
}
