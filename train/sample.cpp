// onebit-sample: the teacher writes its own training data (LLM-QAT self-sampling,
// method.md §4) into a token dataset folder that onebit-train reads (data.source=dataset).
// Several processes (torchrun or srun: onebit/dist/launch.h) sample one dataset together
// through C10dSync; rank 0 writes it and prints.
#include <torch/torch.h>

#include <filesystem>
#include <iostream>
#include <memory>

#include "onebit/core/error.h"
#include "onebit/data/self_sample.h"
#include "onebit/dist/c10d_sync.h"
#include "onebit/dist/launch.h"
#include "onebit/models/loader.h"
#include "train/cli.h"

namespace {

torch::Dtype parse_dtype(const std::string& s) {
  if (s == "fp32") return torch::kFloat32;
  if (s == "bf16") return torch::kBFloat16;
  if (s == "fp16") return torch::kFloat16;
  onebit::fail("--dtype must be fp32, bf16 or fp16, got '", s, "'");
}

}  // namespace

int main(int argc, char** argv) {
  return onebit::guarded_main("onebit-sample", [&]() -> int {
    CLI::App app{
        "onebit-sample: self-sampled training data (LLM-QAT). Each sample starts with a token drawn from the\n"
        "vocabulary, continues with greedy tokens, then samples from the softmax up to --max-length or EOS.\n"
        "Commits after every batch; rerun the same command to resume an interrupted run (byte-identical result)."};
    std::string model_dir, out_dir, dtype = "auto", device = "auto";
    onebit::data::SampleOptions o;
    onebit::config::SampleCfg& c = o.sampling;
    bool no_eos_stop = false, quiet = false;
    int threads = 0;
    onebit::dist::C10dOptions dist;
    app.add_option("--model", model_dir, "Hugging Face model folder (config.json + safetensors)")->required();
    app.add_option("--out", out_dir, "output dataset folder (created, or resumed)")->required();
    app.add_option("--num-samples", c.num_samples, "number of samples (a larger value extends a dataset)")->required();
    app.add_option("--max-length", c.max_length, "max tokens per sample, first token included")->capture_default_str();
    app.add_option("--batch-size", c.batch_size, "rows generated together")->capture_default_str();
    app.add_option("--seed", o.seed, "seed; batch k depends only on (seed, k)")->capture_default_str();
    app.add_option("--first-token", c.first_token, "uniform: random ids; sweep: every id in turn")
        ->check(CLI::IsMember({"uniform", "sweep"}))
        ->capture_default_str();
    app.add_option("--greedy-min", c.greedy_min, "fewest greedy tokens after the first")->capture_default_str();
    app.add_option("--greedy-max", c.greedy_max, "most greedy tokens after the first")->capture_default_str();
    app.add_option("--temperature", c.temperature, "softmax temperature (0 = greedy)")->capture_default_str();
    app.add_option("--top-k", c.top_k, "keep the k most likely tokens (0 = all)")->capture_default_str();
    app.add_option("--top-p", c.top_p, "nucleus sampling mass (1 = off)")->capture_default_str();
    app.add_option("--dtype", dtype, "model dtype: fp32 | bf16 | fp16 | auto (bf16 on CUDA, fp32 on CPU)")
        ->capture_default_str();
    app.add_option("--device", device, "auto | cpu | cuda | cuda:N (several ranks: cuda = GPU LOCAL_RANK)")
        ->capture_default_str();
    app.add_flag("--no-eos-stop", no_eos_stop, "keep sampling past EOS up to --max-length");
    app.add_option("--threads", threads, "CPU threads for torch (0 = torch's default; 1 is fastest for small models on busy machines)")
        ->capture_default_str();
    app.add_option("--dist-backend", dist.backend, "several ranks: auto (nccl on CUDA, gloo on CPU) | gloo | nccl")
        ->check(CLI::IsMember({"auto", "gloo", "nccl"}))
        ->capture_default_str();
    app.add_option("--dist-timeout", dist.timeout_s, "several ranks: seconds to join and per round of batches")
        ->capture_default_str();
    app.add_flag("--quiet", quiet, "no progress bar");
    ONEBIT_PARSE("onebit-sample", app, argc, argv);

    OB_CHECK(threads >= 0, "--threads must be >= 0, got ", threads);
    OB_CHECK(dist.timeout_s > 0, "--dist-timeout must be > 0, got ", dist.timeout_s);
    if (threads > 0) torch::set_num_threads(threads);
    const auto launch = onebit::dist::detect_launch();
    const bool lead = launch.rank == 0;
    const torch::Device dev = onebit::dist::device_for(device, launch);
    if (dtype == "auto") dtype = dev.is_cuda() ? "bf16" : "fp32";
    onebit::models::LoadOptions lo;
    lo.device = dev;
    lo.dtype = parse_dtype(dtype);
    auto model = onebit::models::load_pretrained(model_dir, lo);

    std::unique_ptr<onebit::dist::C10dSync> group;
    if (launch.world_size > 1) {
      group = std::make_unique<onebit::dist::C10dSync>(launch, dev, dist);
      o.ranks = {launch.rank, launch.world_size, [&](const torch::Tensor& t) { return group->all_gather_cpu(t); }};
    }
    c.stop_at_eos = !no_eos_stop;
    o.progress = !quiet && lead;
    o.provenance["model"] = std::filesystem::weakly_canonical(model_dir).string();
    o.provenance["dtype"] = dtype;
    if (lead)
      std::cerr << "onebit-sample: " << model_dir << " (" << dtype << ", " << dev << ", " << launch.world_size
                << (launch.world_size == 1 ? " rank" : " ranks") << ") -> " << out_dir << "\n";
    const auto rep = onebit::data::self_sample(*model, out_dir, o);
    if (!lead) return 0;
    const int64_t made = rep.total - rep.resumed_from;
    std::cout << "wrote " << rep.total << " samples (" << rep.total_tokens << " tokens";
    if (rep.resumed_from > 0) std::cout << "; " << rep.resumed_from << " were already there";
    std::cout << ") to " << out_dir;
    if (made > 0) std::cout << " in " << rep.seconds << " s (" << double(made) / std::max(rep.seconds, 1e-9) << " samples/s)";
    std::cout << std::endl;
    return 0;
  });
}
