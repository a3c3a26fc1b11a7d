// onebit-train: OneBit distillation of a Hugging Face causal LM (method.md §3-5).
//   onebit-train --config configs/llama7b.yaml [key=value ...]
// Run directory (output_dir): config.yaml (resolved), metrics.jsonl, checkpoints/, student/.
// Several processes (torchrun or srun: onebit/dist/launch.h) train data-parallel through
// C10dSync; rank 0 alone writes the run directory and prints.
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>

#include "onebit/config/train_config.h"
#include "onebit/core/error.h"
#include "onebit/data/packed_blocks.h"
#include "onebit/data/training_data.h"
#include "onebit/dist/c10d_sync.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/dist/launch.h"
#include "onebit/distill/checkpoint.h"
#include "onebit/distill/embedded_teacher.h"
#include "onebit/distill/trainer.h"
#include "onebit/eval/perplexity.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/loader.h"
#include "onebit/models/to_onebit.h"
#include "onebit/tokenizer/tokenizer.h"
#include "onebit/util/progress.h"

namespace fs = std::filesystem;
using namespace onebit;

namespace {

torch::Dtype parse_dtype(const std::string& s) {
  if (s == "fp32") return torch::kFloat32;
  if (s == "bf16") return torch::kBFloat16;
  if (s == "fp16") return torch::kFloat16;
  fail("model.dtype must be fp32, bf16 or fp16, got '", s, "'");
}

// auto/cuda: with several processes, GPU LOCAL_RANK (one process per GPU), or the only visible
// GPU when the launcher gives each process its own (srun --gpus-per-task=1); cuda:N as given.
torch::Device pick_device(const std::string& s, const dist::LaunchInfo& launch) {
  if (s == "auto" && !torch::cuda::is_available()) return torch::kCPU;
  torch::Device d(s == "auto" ? "cuda" : s);
  OB_CHECK(!d.is_cuda() || torch::cuda::is_available(), "model.device=", s, " but no CUDA device is available");
  if (d.is_cuda() && !d.has_index() && launch.world_size > 1) {
    const int n = static_cast<int>(torch::cuda::device_count());
    OB_CHECK(launch.local_rank < n || n == 1, "rank ", launch.rank, ": local rank ", launch.local_rank,
             " but this process sees ", n, " GPUs; start at most one process per GPU");
    d = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(n == 1 ? 0 : launch.local_rank));
  }
  return d;
}

double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

void copy_tokenizer_files(const fs::path& from, const fs::path& to) {
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    if (fs::exists(from / f)) fs::copy_file(from / f, to / f, fs::copy_options::overwrite_existing);
}

double eval_ppl(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok, const std::vector<std::string>& docs,
                const config::TrainConfig& cfg) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  eval::PplOptions o;
  o.protocol = eval::PplProtocol::Docs;
  o.seq_len = cfg.train.eval_seq_len;
  o.windows = cfg.train.eval_windows;
  o.progress = false;
  const double ppl = eval::perplexity(model, tok, docs, o).ppl;
  if (was_training) model.train();
  return ppl;
}

// A checkpoint made with another teacher, student, data stream, world size or sharding would
// silently mix two runs.
void check_resumable(const fs::path& ckpt, const config::TrainConfig& cfg, int world_size) {
  const std::string layout = distill::CheckpointManager::layout_mismatch(ckpt, world_size, cfg.dist.sharding);
  OB_CHECK(layout.empty(), "cannot resume from ", ckpt.string(), ": ", layout);
  const auto st = distill::CheckpointManager::read_state(ckpt);
  if (st.config_yaml.empty()) return;  // written before checkpoints carried their config
  const auto diffs = config::resume_conflicts(config::parse_train_config(st.config_yaml, {}, ckpt.string()), cfg);
  if (diffs.empty()) return;
  std::string list;
  for (const auto& d : diffs) list += (list.empty() ? "" : "; ") + d;
  fail("cannot resume from ", ckpt.string(), ": it belongs to a different run (", list,
       "); use another output_dir, or train.resume=never to start over");
}

int run(const std::string& config_path, const std::vector<std::string>& overrides, bool print_only) {
  config::TrainConfig cfg = config::load_train_config(config_path, overrides);
  if (print_only) {
    std::cout << cfg.to_yaml();
    return 0;
  }
  // Processes: one (NoSync), or a c10d group that every rank joins here (dist.timeout_s).
  const dist::LaunchInfo launch = dist::detect_launch();
  const bool lead = launch.rank == 0;  // rank 0 writes the run folder and prints
  const torch::Device device = pick_device(cfg.model.device, launch);
  dist::NoSync no_sync;
  std::unique_ptr<dist::C10dSync> group;
  if (launch.world_size > 1) {
    dist::C10dOptions o;
    o.backend = cfg.dist.backend;
    o.timeout_s = static_cast<double>(cfg.dist.timeout_s);
    group = std::make_unique<dist::C10dSync>(launch, device, o);
    if (lead)
      std::cerr << "dist: " << launch.world_size << " ranks (" << launch.source << "), " << group->backend()
                << " at " << launch.master_addr << ":" << launch.master_port << std::endl;
  }
  dist::GradSync& sync = group ? static_cast<dist::GradSync&>(*group) : no_sync;
  // Rank 0 writes a shared cache (teacher, samples, checkpoint) while the others wait for it.
  auto rank0_first = [&](const std::string& what, const std::function<void()>& fn) {
    if (group) group->rank0_first(what, fn);
    else fn();
  };
  // Vet a resume before any expensive work: the checkpoint must belong to this run.
  const fs::path out = cfg.output_dir;
  const std::string run_yaml = cfg.to_yaml();  // as the user wrote it (before 'embedded' is resolved)
  distill::CheckpointManager ckpts(out / "checkpoints", cfg.train.keep_last);
  std::optional<fs::path> resume_from;
  if (cfg.train.resume == "auto") resume_from = ckpts.latest_valid();
  else if (cfg.train.resume != "never") resume_from = fs::path(cfg.train.resume);
  if (resume_from) check_resumable(*resume_from, cfg, launch.world_size);

  if (cfg.model.teacher == "embedded") {
    // Quickstart: pretrain (or reuse) the tiny synthetic-language teacher, evaluate on its held-out text.
    distill::EmbeddedTeacher et;
    rank0_first("pretraining the embedded teacher",
                [&] { et = distill::ensure_embedded_teacher(cfg.embedded, cfg.output_dir, device, lead); });
    if (et.reused && lead) std::cerr << "embedded teacher: reusing " << et.dir << std::endl;
    cfg.model.teacher = et.dir;
    if (cfg.train.eval_text.empty()) cfg.train.eval_text = et.heldout_text;
  }
  const fs::path teacher_dir = cfg.model.teacher;
  OB_CHECK(fs::is_directory(teacher_dir) && fs::exists(teacher_dir / "config.json"), "model.teacher: '",
           teacher_dir.string(), "' is not a Hugging Face model folder (no config.json)");

  fs::create_directories(out);
  if (lead) io::write_file_atomic((out / "config.yaml").string(), cfg.to_yaml());
  torch::manual_seed(cfg.train.seed);
  if (cfg.train.deterministic) at::globalContext().setDeterministicAlgorithms(true, false);

  // Teacher (frozen) and student (a second load, converted to OneBit; fp32 latent weights,
  // the masters of every train.precision: bf16/fp16 only change the compute, in the Trainer).
  models::LoadOptions tl{device, parse_dtype(cfg.model.dtype)};
  auto teacher = models::load_pretrained(teacher_dir.string(), tl);
  auto student = models::load_pretrained(teacher_dir.string(), models::LoadOptions{device, torch::kFloat32});
  models::StudentOptions so;
  so.svid = cfg.student.svid;
  so.latent_init = cfg.student.latent_init;
  so.latent_scale = cfg.student.latent_scale;
  so.ste = cfg.student.ste;
  so.post_layernorm = cfg.student.post_layernorm;
  so.keep_bias = cfg.student.keep_bias;
  so.layers = cfg.student.layers;
  const auto replaced = models::to_onebit(*student, so);
  if (lead) std::cerr << "student: " << replaced.size() << " linears replaced by OneBitLinear" << std::endl;

  // Data: every rank the same blocks (rank 0 samples first), each its slice of every batch.
  std::shared_ptr<const data::PackedBlocks> blocks;
  rank0_first("preparing the training data",
              [&] { blocks = data::training_blocks(cfg, *teacher, teacher_dir.string(), lead); });
  data::BatchIterator batches(blocks, data::batch_options(cfg, launch.rank, launch.world_size));
  OB_CHECK(batches.batches_per_epoch() > 0, "data: ", blocks->num_blocks(), " blocks of ", cfg.data.seq_len,
           " tokens are fewer than one batch of data.batch_size=", cfg.data.batch_size);
  const int64_t total = cfg.train.max_steps > 0
                            ? cfg.train.max_steps
                            : std::max<int64_t>(1, cfg.train.epochs * batches.batches_per_epoch() / cfg.optim.grad_accum);

  auto trainer_ptr =
      std::make_unique<distill::Trainer>(cfg, teacher, student, [&] { return batches.next(); }, sync, total);
  distill::Trainer& trainer = *trainer_ptr;
  if (resume_from) {
    const auto st = ckpts.load(*resume_from, trainer.param_sync());
    trainer.load_state(st);  // the step and the fp16 loss scaler
    batches.seek({st.counters.at("data_epoch"), st.counters.at("data_index")});
    if (lead) std::cerr << "resumed from " << resume_from->string() << " at step " << st.step << std::endl;
  }
  if (group) {
    // Every rank must continue from the same checkpoint (output_dir on a shared filesystem).
    const double s = static_cast<double>(trainer.steps_done());
    const double m = sync.mean(s), m2 = sync.mean(s * s);
    OB_CHECK(m2 - m * m == 0, "dist: the ranks resumed from different steps (rank ", launch.rank, " from step ",
             trainer.steps_done(), ", mean ", m, "); output_dir must be one folder that all ranks share");
    // Start from rank 0's values, as DDP does (a GPU init need not be bitwise reproducible).
    // dist.sharding=full replicates no trainable value: each shard has its one owner.
    std::vector<torch::Tensor> tensors;
    for (const auto& [name, t] : trainer.trainable()) tensors.push_back(t);
    if (cfg.dist.sharding != "full") group->broadcast(tensors, 0);
  }
  // Every rank writes its shard; rank 0 commits once all are complete (no rank races past it).
  int64_t saved_step = -1;
  auto save = [&] {
    distill::TrainState st;
    trainer.save_state(st);
    st.counters["data_epoch"] = batches.position().epoch;
    st.counters["data_index"] = batches.position().index;
    st.config_yaml = run_yaml;
    ckpts.save(trainer.param_sync(), st);
    saved_step = st.step;
  };

  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::vector<std::string> eval_docs;
  if (!cfg.train.eval_text.empty()) {
    tok = tokenizer::load_tokenizer(teacher_dir.string());
    eval_docs = eval::read_documents(cfg.train.eval_text, eval::PplProtocol::Docs);
  }

  std::ofstream metrics;
  if (lead) metrics.open(out / "metrics.jsonl", std::ios::app);
  std::optional<util::ProgressBar> bar;
  if (lead) bar.emplace("distill", total, "steps");
  const auto t0 = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  while (trainer.steps_done() < total) {
    const auto st = trainer.step();
    tokens += st.tokens * launch.world_size;  // all ranks: every rank's batch has the same shape
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    nlohmann::json m = {{"step", st.step},     {"loss", st.loss}, {"kl", st.kl},       {"hidden", st.hidden},
                        {"ce", st.ce},         {"lr", st.lr},     {"grad_norm", st.grad_norm},
                        {"skipped", st.skipped}, {"tokens_per_s", tokens / std::max(secs, 1e-9)},
                        {"peak_rss_mb", peak_rss_mb()}};
    if (trainer.loss_scaler()) {
      m["loss_scale"] = st.loss_scale;
      m["overflow"] = st.overflow;
    }
    const bool eval_now = tok && cfg.train.eval_every > 0 && st.step % cfg.train.eval_every == 0 && !st.skipped;
    // Every rank evaluates (same result): the others would only wait, and stay within the timeout.
    if (eval_now) m["eval_ppl"] = eval_ppl(*student, *tok, eval_docs, cfg);
    if (lead) {
      if (st.step % cfg.train.log_every == 0 || eval_now || st.skipped) metrics << m.dump() << "\n" << std::flush;
      char extra[112];
      const int n = std::snprintf(extra, sizeof extra, "loss %.4f kl %.3f hid %.4f", st.loss, st.kl, st.hidden);
      if (trainer.loss_scaler() && n > 0 && n < static_cast<int>(sizeof extra))
        std::snprintf(extra + n, sizeof extra - n, " scale %g", trainer.loss_scaler()->scale());
      bar->update(trainer.steps_done(), extra);
    }
    if (cfg.train.save_every > 0 && !st.skipped && st.step % cfg.train.save_every == 0) save();
  }
  if (bar) bar->finish();
  if (saved_step != trainer.steps_done()) save();  // the last periodic checkpoint is not rewritten
  const int64_t steps_done = trainer.steps_done();
  // Gathers the student (dist.sharding=full) and frees the gradients, the optimizer state and the
  // communication buffers before the evaluation.
  trainer.finish();
  trainer_ptr.reset();
  // No rank may leave (rank 0 takes the store with it) before all saw the checkpoint complete.
  if (group) group->barrier("end of training");
  if (!lead) return 0;  // the student and the final table are rank 0's

  const fs::path student_dir = out / "student";
  models::save_pretrained(student, student_dir.string());
  copy_tokenizer_files(teacher_dir, student_dir);
  std::cerr << "student saved to " << student_dir.string() << std::endl;
  if (tok) {
    // Final table on the whole eval text: teacher, OneBit student, naive 1-bit baseline.
    config::TrainConfig full = cfg;
    full.train.eval_windows = 0;
    auto naive = models::load_pretrained(teacher_dir.string(), models::LoadOptions{device, torch::kFloat32});
    models::naive_sign_quantize(*naive);
    const double t_ppl = eval_ppl(*teacher, *tok, eval_docs, full);
    const double s_ppl = eval_ppl(*student, *tok, eval_docs, full);
    const double n_ppl = eval_ppl(*naive, *tok, eval_docs, full);
    metrics << nlohmann::json{{"step", steps_done}, {"final_ppl", {{"teacher", t_ppl}, {"student", s_ppl},
                                                                            {"naive_sign", n_ppl}}}}.dump()
            << "\n";
    std::printf("perplexity on %s (docs protocol, seq_len %lld)\n", cfg.train.eval_text.c_str(),
                static_cast<long long>(cfg.train.eval_seq_len));
    std::printf("  %-26s %10.3f\n  %-26s %10.3f\n  %-26s %10.3f\n", "teacher (full precision)", t_ppl,
                "OneBit student", s_ppl, "naive 1-bit (sign)", n_ppl);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return guarded_main("onebit-train", [&] {
    CLI::App app{"onebit-train: OneBit distillation of a causal LM (keys: docs/configuration.md)"};
    std::string config_path;
    std::vector<std::string> overrides;
    bool print_config = false;
    app.add_option("--config", config_path, "YAML recipe (configs/*.yaml)")->required()->check(CLI::ExistingFile);
    app.add_option("overrides", overrides, "key=value overrides, e.g. optim.lr=1e-4 kd.alpha=0");
    app.add_flag("--print-config", print_config, "print the resolved configuration and exit");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    return run(config_path, overrides, print_config);
  });
}
