// onebit-generate: continue a prompt with a Hugging Face model folder (FP or OneBit student).
#include <torch/torch.h>

#include <chrono>
#include <iostream>

#include "onebit/core/error.h"
#include "onebit/models/generate.h"
#include "onebit/models/loader.h"
#include "onebit/tokenizer/tokenizer.h"
#include "train/cli.h"

using namespace onebit;

namespace {
torch::Dtype parse_dtype(const std::string& s) {
  if (s == "fp32" || s == "float32") return torch::kFloat32;
  if (s == "bf16" || s == "bfloat16") return torch::kBFloat16;
  if (s == "fp16" || s == "float16") return torch::kFloat16;
  fail("--dtype: unknown dtype '", s, "' (fp32, bf16, fp16)");
}

torch::Device parse_device(const std::string& s) {
  if (s == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  try {
    return torch::Device(s);
  } catch (const c10::Error&) {
    fail("--device: unknown device '", s, "' (auto, cpu, cuda, cuda:N)");
  }
}
}  // namespace

int main(int argc, char** argv) {
  return guarded_main("onebit-generate", [&] {
    CLI::App app{"Continue a prompt with a Hugging Face model folder (LLaMA family, OPT, OneBit students).\n"
                 "Prints the continuation on stdout and the speed on stderr."};
    std::string model_dir, prompt, dtype = "fp32", device = "auto", decode = "auto";
    models::GenerateOptions go;
    go.temperature = 0;
    app.add_option("--model", model_dir, "model folder (config.json, model.safetensors, tokenizer)")->required();
    app.add_option("--prompt", prompt, "prompt text; empty = BOS alone");
    app.add_option("--max-new-tokens", go.max_new_tokens, "tokens to generate")->capture_default_str();
    app.add_option("--temperature", go.temperature, "sampling temperature; <= 0 = greedy")->capture_default_str();
    app.add_option("--top-k", go.top_k, "sample among the k most likely tokens (0 = off)")->capture_default_str();
    app.add_option("--top-p", go.top_p, "nucleus sampling mass (1 = off)")->capture_default_str();
    app.add_option("--seed", go.seed, "sampling seed")->capture_default_str();
    app.add_option("--dtype", dtype, "fp32 | bf16 | fp16")->capture_default_str();
    app.add_option("--device", device, "auto | cpu | cuda | cuda:N")->capture_default_str();
    app.add_option("--decode", decode,
                   "auto (graph on CUDA, else dynamic) | dynamic (growing KV cache) | static (fixed-shape cache) | "
                   "graph (static, steps replayed from CUDA graphs)")
        ->capture_default_str();
    ONEBIT_PARSE("onebit-generate", app, argc, argv);
    go.decode = models::parse_decode(decode, "--decode");

    auto tok = tokenizer::load_tokenizer(model_dir);
    auto model = models::load_pretrained(model_dir, {parse_device(device), parse_dtype(dtype)});
    tokenizer::check_fits_model(*tok, model_dir, model->config().vocab_size, model_dir);
    model->eval();
    auto ids = tok->encode_with_special(prompt);
    if (ids.empty() || (prompt.empty() && tok->bos_id() >= 0 && ids.front() != tok->bos_id()))
      ids.insert(ids.begin(), tok->bos_id());
    OB_CHECK(!ids.empty() && ids.front() >= 0, "the prompt is empty and the tokenizer has no BOS token");
    go.eos_token_id = tok->eos_id();

    const auto t0 = std::chrono::steady_clock::now();
    auto out = models::generate(*model, torch::tensor(ids, torch::kLong).unsqueeze(0), go);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    out = out[0].to(torch::kCPU);
    std::vector<int64_t> cont(out.data_ptr<int64_t>() + ids.size(), out.data_ptr<int64_t>() + out.numel());
    std::cout << tok->decode(cont) << std::endl;
    std::cerr << cont.size() << " tokens in " << secs << " s (" << cont.size() / std::max(secs, 1e-9)
              << " tokens/s)" << std::endl;
    return 0;
  });
}
