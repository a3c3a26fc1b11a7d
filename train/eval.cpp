// onebit-eval: perplexity and zero-shot accuracy of a model (and optionally its teacher),
// following the protocols of docs/evaluation.md (method.md §6).
#include <torch/torch.h>


#include <filesystem>
#include <iostream>
#include <tuple>

#include "onebit/core/error.h"
#include "onebit/eval/perplexity.h"
#include "onebit/eval/report.h"
#include "onebit/eval/tasks.h"
#include "onebit/eval/zeroshot.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/loader.h"
#include "onebit/models/model_config.h"
#include "onebit/tokenizer/tokenizer.h"
#include "train/cli.h"

namespace fs = std::filesystem;
using namespace onebit;

namespace {

bool has_tokenizer_files(const std::string& dir) {
  return fs::exists(fs::path(dir) / "tokenizer.model") || fs::exists(fs::path(dir) / "tokenizer.json");
}

struct PplInput {
  std::string file, label;
  eval::PplOptions options;
  std::vector<std::string> docs;
};

struct Inputs {
  std::vector<PplInput> ppl;
  std::vector<eval::Task> tasks;
};

eval::ModelEval evaluate(const std::string& dir, const tokenizer::Tokenizer& tok, const std::string& tok_dir,
                         const Inputs& in,
                         const eval::ZeroShotOptions& zs, const models::LoadOptions& load) {
  std::cerr << "loading " << dir << std::endl;
  auto model = models::load_pretrained(dir, load);
  tokenizer::check_fits_model(tok, tok_dir, model->config().vocab_size, dir);
  eval::ModelEval out;
  out.model = dir;
  for (const auto& p : in.ppl) {
    eval::PplEntry e;
    e.file = p.file;
    e.label = p.label;
    e.options = p.options;
    e.result = eval::perplexity(*model, tok, p.docs, p.options);
    out.ppl.push_back(e);
  }
  for (const auto& task : in.tasks) out.tasks.push_back(eval::evaluate_task(*model, tok, task, zs));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  return guarded_main("onebit-eval", [&]() -> int {
    CLI::App app{
        "onebit-eval: perplexity and zero-shot accuracy of a Hugging Face-layout model folder\n"
        "(full precision or a OneBit student), optionally against its teacher.\n"
        "Protocols and the JSON schema: docs/evaluation.md.\n\n"
        "Examples:\n"
        "  onebit-eval --model out/student --ppl wiki.test.raw --ppl-protocol wikitext --seq-len 2048\n"
        "  onebit-eval --model out/student --compare llama-7b --ppl c4-validation.json --ppl-protocol c4 \\\n"
        "              --tasks piqa.jsonl winogrande.jsonl --dtype bf16 --device cuda --json eval.json\n"
        "  onebit-eval --model out/student --compare llama-7b --paper --wiki2 wiki.test.raw \\\n"
        "              --c4 c4-validation.00000-of-00008.json --tasks piqa=piqa.jsonl hellaswag=hs.jsonl \\\n"
        "              winogrande=wg.jsonl boolq=boolq.jsonl arc_easy=arce.jsonl arc_challenge=arcc.jsonl\n"};
    std::string model_dir, teacher_dir, tokenizer_dir, protocol = "wikitext", dtype = "fp32", device,
                                                       json_out, add_bos = "auto", wiki2_file, c4_file;
    std::vector<std::string> ppl_files, task_files;
    int64_t seq_len = 2048, windows = -1, limit = 0, batch_size = 1, task_tokens = 4096, max_length = 0;
    uint64_t seed = 0;
    bool quiet = false, paper = false;
    app.add_option("--model", model_dir, "model folder (config.json + model.safetensors) to evaluate")
        ->required();
    app.add_option("--ppl", ppl_files, "text for perplexity: plain text, or .jsonl/.json lines with \"text\"");
    app.add_option("--ppl-protocol", protocol,
                   "wikitext: join documents with \"\\n\\n\", tokenize once, consecutive windows; "
                   "c4: seeded random windows from documents longer than seq_len; "
                   "docs: blank-line separated documents each with BOS, concatenated, consecutive windows")
        ->check(CLI::IsMember({"wikitext", "c4", "docs"}))
        ->capture_default_str();
    app.add_option("--seq-len", seq_len, "tokens per perplexity window")->capture_default_str();
    app.add_option("--windows", windows,
                   "c4: number of windows (default 256); wikitext/docs: use only the first N (default all)");
    app.add_option("--wiki2", wiki2_file,
                   "WikiText-2 test text for the paper's Wiki2 row (wikitext protocol; wiki.test.raw)");
    app.add_option("--c4", c4_file,
                   "C4 validation shard (json lines) for the paper's C4 row (c4 protocol, --windows, --seed)");
    app.add_option("--tasks", task_files,
                   "zero-shot tasks: NAME=FILE with NAME one of piqa, hellaswag, winogrande, boolq, arc_easy, "
                   "arc_challenge, lambada (Hugging Face dataset rows as jsonl, lm-eval 0.4 prompts and metrics), "
                   "or a MosaicML ICL jsonl file (multiple_choice or schema, auto-detected)");
    app.add_option("--add-bos", add_bos,
                   "BOS on every task encoding: auto = the tokenizer's default (lm-eval's HF default), yes, no")
        ->check(CLI::IsMember({"auto", "yes", "no"}))
        ->capture_default_str();
    app.add_option("--task-batch-tokens", task_tokens,
                   "zero-shot batching: at most this many tokens (rows x padded length) per forward")
        ->capture_default_str();
    app.add_option("--max-length", max_length,
                   "zero-shot left truncation length (0 = the model's max_position_embeddings, as lm-eval)")
        ->capture_default_str();
    app.add_flag("--paper", paper,
                 "also print the paper's table: Wiki2/C4 perplexity, the six accuracies, average (retention "
                 "with --compare)");
    app.add_option("--limit", limit, "first N examples per task (0 = all)")->capture_default_str();
    app.add_option("--batch-size", batch_size, "perplexity windows per forward")->capture_default_str();
    app.add_option("--dtype", dtype, "model dtype (log-softmax always in fp32)")
        ->check(CLI::IsMember({"fp32", "bf16"}))
        ->capture_default_str();
    app.add_option("--device", device, "cpu, cuda or cuda:N (default: cuda when available, else cpu)");
    app.add_option("--seed", seed, "seed of the c4 window draws (Python random.seed)")->capture_default_str();
    app.add_option("--json", json_out, "write every number as JSON to this file");
    app.add_option("--compare", teacher_dir, "teacher model folder: evaluate it too, print retention");
    app.add_option("--tokenizer", tokenizer_dir,
                   "folder with the tokenizer files (default: --model, else --compare when the model "
                   "folder has none)");
    app.add_flag("--quiet", quiet, "no progress bars");
    ONEBIT_PARSE("onebit-eval", app, argc, argv);

    OB_CHECK(!ppl_files.empty() || !task_files.empty() || !wiki2_file.empty() || !c4_file.empty(),
             "nothing to evaluate: give --ppl, --wiki2, --c4 and/or --tasks");
    OB_CHECK(task_tokens >= 1, "--task-batch-tokens must be >= 1 (got ", task_tokens, ")");
    OB_CHECK(max_length >= 0, "--max-length must be >= 0 (got ", max_length, ")");
    OB_CHECK(seq_len >= 2, "--seq-len must be >= 2 (got ", seq_len, ")");
    OB_CHECK(batch_size >= 1, "--batch-size must be >= 1 (got ", batch_size, ")");
    OB_CHECK(limit >= 0, "--limit must be >= 0 (got ", limit, ")");
    const auto proto = eval::parse_ppl_protocol(protocol);
    const bool windows_given = windows >= 0;
    if (windows < 0) windows = proto == eval::PplProtocol::C4 ? 256 : 0;

    if (device.empty()) device = torch::cuda::is_available() ? "cuda" : "cpu";
    OB_CHECK(device == "cpu" || device.rfind("cuda", 0) == 0, "--device must be cpu, cuda or cuda:N (got '",
             device, "')");
    models::LoadOptions load;
    load.device = torch::Device(device);
    OB_CHECK(!load.device.is_cuda() || torch::cuda::is_available(), "--device ", device,
             ": CUDA is not available on this machine");
    load.dtype = dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;

    if (tokenizer_dir.empty())
      tokenizer_dir = !has_tokenizer_files(model_dir) && !teacher_dir.empty() ? teacher_dir : model_dir;
    auto tok = tokenizer::load_tokenizer(tokenizer_dir);

    // Read and validate every input before loading a model.
    const bool any_ppl = !ppl_files.empty() || !wiki2_file.empty() || !c4_file.empty();
    for (const auto& dir : {model_dir, teacher_dir}) {
      if (dir.empty() || !any_ppl) continue;
      const auto cfg = models::load_model_config((fs::path(dir) / "config.json").string());
      OB_CHECK(seq_len <= cfg.max_position_embeddings, "--seq-len ", seq_len, " exceeds max_position_embeddings ",
               cfg.max_position_embeddings, " of '", dir, "'");
    }
    eval::PplOptions ppl_opts;
    ppl_opts.protocol = proto;
    ppl_opts.seq_len = seq_len;
    ppl_opts.batch_size = batch_size;
    ppl_opts.windows = windows;
    ppl_opts.seed = seed;
    ppl_opts.progress = !quiet;
    Inputs in;
    for (const auto& f : ppl_files) in.ppl.push_back({f, "", ppl_opts, eval::read_documents(f, proto)});
    for (auto [file, label, p] : {std::tuple{wiki2_file, "wiki2", eval::PplProtocol::Wikitext},
                                  std::tuple{c4_file, "c4", eval::PplProtocol::C4}}) {
      if (file.empty()) continue;
      eval::PplOptions o = ppl_opts;
      o.protocol = p;
      o.windows = windows_given ? windows : (p == eval::PplProtocol::C4 ? 256 : 0);
      in.ppl.push_back({file, label, o, eval::read_documents(file, p)});
    }
    for (const auto& f : task_files) in.tasks.push_back(eval::load_task_arg(f, limit));

    eval::ZeroShotOptions zs;
    zs.progress = !quiet;
    zs.add_bos = eval::parse_add_bos(add_bos);
    zs.batch_tokens = task_tokens;
    zs.max_length = max_length;

    eval::EvalReport report;
    auto& s = report.settings;
    s.ppl_protocol = protocol;
    s.dtype = dtype;
    s.device = device;
    s.seq_len = seq_len;
    s.windows = windows;
    s.batch_size = batch_size;
    s.limit = limit;
    s.seed = seed;
    s.add_bos = add_bos;
    s.task_batch_tokens = task_tokens;
    s.paper = paper;
    report.student = evaluate(model_dir, *tok, tokenizer_dir, in, zs, load);
    if (!teacher_dir.empty()) report.teacher = evaluate(teacher_dir, *tok, tokenizer_dir, in, zs, load);

    std::cout << eval::format_table(report);
    if (paper) std::cout << "\n" << eval::format_paper_table(report);
    std::cout << std::flush;
    if (!json_out.empty()) {
      io::write_file_atomic(json_out, eval::report_json(report));
      std::cerr << "wrote " << json_out << std::endl;
    }
    return 0;
  });
}
