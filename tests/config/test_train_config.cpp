#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

#include "onebit/config/train_config.h"
#include "onebit/core/error.h"
#include "tests/support.h"

using onebit::config::load_train_config;
using onebit::config::parse_train_config;
using onebit::config::TrainConfig;

namespace {
const std::string kMinimal = "model:\n  teacher: embedded\n";
TrainConfig parse(const std::string& extra, const std::vector<std::string>& ov = {}) {
  return parse_train_config(kMinimal + extra, ov, "test.yaml");
}
}  // namespace

TEST_CASE("config: defaults and a full file parse into the typed struct", "[config]") {
  const TrainConfig d = parse("");
  CHECK(d.model.teacher == "embedded");
  CHECK(d.optim.lr == 4e-4);
  CHECK(d.optim.beta2 == 0.98);
  CHECK(d.data.seq_len == 2048);
  CHECK(d.student.svid == "nmf");
  CHECK(d.output_dir == "runs/onebit");

  const TrainConfig c = parse(
      "  dtype: fp32\n  gradient_checkpointing: yes\n"
      "student:\n  svid: svd\n  layers: 'mlp\\..*'\n"
      "data:\n  source: text\n  path: /tmp/a.txt\n  seq_len: 512\n  seed: 7\n"
      "embedded:\n  train_tokens: 2e6\n"
      "optim:\n  lr: 1e-4\n  warmup_steps: 1_000\n"
      "kd:\n  alpha: 0\n"
      "output_dir: runs/x\n");
  CHECK(c.model.dtype == "fp32");
  CHECK(c.model.gradient_checkpointing);
  CHECK(c.student.svid == "svd");
  CHECK(c.student.layers == "mlp\\..*");
  CHECK(c.data.source == "text");
  CHECK(c.data.path == "/tmp/a.txt");
  CHECK(c.data.seq_len == 512);
  CHECK(c.data.seed == 7u);
  CHECK(c.embedded.train_tokens == 2'000'000);
  CHECK(c.optim.lr == 1e-4);
  CHECK(c.optim.warmup_steps == 1000);
  CHECK(c.kd.alpha == 0.0);
  CHECK(c.output_dir == "runs/x");
}

TEST_CASE("config: lean precision keys parse, default to fp32, and name themselves in errors", "[config]") {
  const TrainConfig d = parse("");
  CHECK(d.student.latent_dtype == "fp32");
  CHECK(d.optim.state_dtype == "fp32");
  const TrainConfig c = parse("student:\n  latent_dtype: bf16\n", {"optim.state_dtype=bf16"});
  CHECK(c.student.latent_dtype == "bf16");
  CHECK(c.optim.state_dtype == "bf16");
  CHECK_THROWS_WITH(parse("", {"optim.state_dtyp=bf16"}),
                    OB_CONTAINS("unknown key 'optim.state_dtyp' (did you mean 'optim.state_dtype'?)"));
  CHECK_THROWS_WITH(parse("student:\n  latent_dtype: bfloat16\n"),
                    OB_CONTAINS("config: student.latent_dtype must be one of fp32, bf16; got 'bfloat16'"));
  // Both change what a checkpoint holds (the dtypes of the parameters and of the AdamW state).
  CHECK(onebit::config::resume_conflicts(d, c) ==
        std::vector<std::string>{"student.latent_dtype: was \"fp32\", now \"bf16\"",
                                 "optim.state_dtype: was \"fp32\", now \"bf16\""});
}

TEST_CASE("config: overrides apply after the file, typed", "[config]") {
  const TrainConfig c = parse("optim:\n  lr: 1e-4\n",
                              {"optim.lr=2e-4", "kd.alpha=0.5", "train.deterministic=true", "data.batch_size=8",
                               "output_dir=\"runs/with space\"", "student.layers="});
  CHECK(c.optim.lr == 2e-4);
  CHECK(c.kd.alpha == 0.5);
  CHECK(c.train.deterministic);
  CHECK(c.data.batch_size == 8);
  CHECK(c.output_dir == "runs/with space");
  CHECK(c.student.layers.empty());
}

TEST_CASE("config: unknown keys name the key and suggest the nearest one", "[config]") {
  CHECK_THROWS_WITH(parse("kd:\n  aplha: 1\n"),
                    OB_CONTAINS("test.yaml: unknown key 'kd.aplha' (did you mean 'kd.alpha'?)"));
  CHECK_THROWS_WITH(parse("", {"kd.aplha=1"}), OB_CONTAINS("unknown key 'kd.aplha' (did you mean 'kd.alpha'?)"));
  CHECK_THROWS_WITH(parse("", {"kd.aplha=1"}), OB_CONTAINS("override 'kd.aplha=1'"));
  CHECK_THROWS_WITH(parse("optm:\n  lr: 1\n"), OB_CONTAINS("unknown key 'optm.lr' (did you mean 'optim.lr'?)"));
  CHECK_THROWS_WITH(parse("output_dri: x\n"), OB_CONTAINS("unknown key 'output_dri' (did you mean 'output_dir'?)"));
  CHECK_THROWS_WITH(parse("", {"lr=1"}), OB_CONTAINS("unknown key 'lr' (did you mean 'embedded.lr' or 'optim.lr'?)"));
  // Far from every key: no hint.
  CHECK_THROWS_WITH(parse("", {"completely.different=1"}), OB_CONTAINS("unknown key 'completely.different'"));
  CHECK_THROWS_WITH(parse("", {"completely.different=1"}), !OB_CONTAINS("did you mean"));
  // A list or a mapping as a key (found by the fuzz replay: yaml-cpp's "bad conversion" escaped).
  CHECK_THROWS_WITH(parse("kd:\n  [a, b]: 1\n"), OB_CONTAINS("test.yaml: a key must be a plain name, got a list at line "));
  CHECK_THROWS_WITH(parse("? {a: 1}\n: 2\n"), OB_CONTAINS("a key must be a plain name, got a mapping"));
}

TEST_CASE("config: wrong types name the key and the value", "[config]") {
  CHECK_THROWS_WITH(parse("optim:\n  lr: abc\n"), OB_CONTAINS("key 'optim.lr' expects a number, got 'abc'"));
  CHECK_THROWS_WITH(parse("", {"optim.lr=abc"}), OB_CONTAINS("key 'optim.lr' expects a number, got 'abc'"));
  CHECK_THROWS_WITH(parse("", {"data.seq_len=12.5"}), OB_CONTAINS("key 'data.seq_len' expects an integer, got '12.5'"));
  CHECK_THROWS_WITH(parse("", {"data.seed=-1"}), OB_CONTAINS("key 'data.seed' expects a non-negative integer, got '-1'"));
  CHECK_THROWS_WITH(parse("", {"train.deterministic=maybe"}),
                    OB_CONTAINS("key 'train.deterministic' expects true or false, got 'maybe'"));
  CHECK_THROWS_WITH(parse("", {"optim.lr=inf"}), OB_CONTAINS("key 'optim.lr' expects a number, got 'inf'"));
  CHECK_THROWS_WITH(parse("optim:\n  lr: [1, 2]\n"), OB_CONTAINS("key 'optim.lr' expects a single value, got a list"));
  CHECK_THROWS_WITH(parse("optim:\n  lr:\n"), OB_CONTAINS("key 'optim.lr' has no value"));
  CHECK_THROWS_WITH(parse("optim: 3\n"), OB_CONTAINS("section 'optim' expects a mapping of keys, got a scalar"));
  CHECK_THROWS_WITH(parse("", {"optim.lr"}), OB_CONTAINS("override 'optim.lr' is not of the form key=value"));
  CHECK_THROWS_WITH(parse_train_config("- a\n- b\n", {}, "list.yaml"),
                    OB_CONTAINS("list.yaml: expected a mapping of sections at the top level, got a list"));
  CHECK_THROWS_WITH(parse_train_config("model: {teacher: [\n", {}, "broken.yaml"),
                    OB_CONTAINS("broken.yaml: invalid YAML at line"));
  CHECK_THROWS_WITH(load_train_config("/nonexistent/cfg.yaml"), OB_CONTAINS("cannot open config file '/nonexistent/cfg.yaml'"));
}

TEST_CASE("config: validate() checks ranges and enumerations", "[config]") {
  struct Case {
    std::string override_, message;
  };
  const std::vector<Case> cases = {
      {"optim.lr=0", "optim.lr must be > 0, got 0"},
      {"optim.lr=-1e-3", "optim.lr must be > 0, got -0.001"},
      {"optim.beta1=1", "optim.beta1 must be in [0, 1), got 1"},
      {"optim.beta2=-0.1", "optim.beta2 must be in [0, 1), got -0.1"},
      {"optim.eps=0", "optim.eps must be > 0"},
      {"optim.weight_decay=-1", "optim.weight_decay must be >= 0"},
      {"optim.warmup_steps=-1", "optim.warmup_steps must be >= 0"},
      {"optim.schedule=step", "optim.schedule must be one of cosine, constant, linear; got 'step'"},
      {"optim.min_lr_ratio=2", "optim.min_lr_ratio must be in [0, 1], got 2"},
      {"optim.grad_accum=0", "optim.grad_accum must be > 0 unless train.global_batch is set"},
      {"optim.grad_accum=-1", "optim.grad_accum must be >= 0"},
      {"train.global_batch=-1", "train.global_batch must be >= 0"},
      {"data.seq_len=0", "data.seq_len must be > 0, got 0"},
      {"data.batch_size=-2", "data.batch_size must be > 0, got -2"},
      {"data.source=web", "data.source must be one of sample, dataset, text; got 'web'"},
      {"data.source=dataset", "data.path must be set when data.source is 'dataset'"},
      {"data.num_samples=0", "data.num_samples must be > 0"},
      {"data.sample_length=1", "data.sample_length must be >= 2"},
      {"data.sample_batch=0", "data.sample_batch must be > 0"},
      {"data.first_token=random", "data.first_token must be one of uniform, sweep; got 'random'"},
      {"data.greedy_min=-1", "data.greedy_min must be >= 0, got -1"},
      {"data.greedy_max=1", "data.greedy_max must be >= data.greedy_min (2), got 1"},
      {"data.temperature=-0.5", "data.temperature must be >= 0, got -0.5"},
      {"data.top_k=-1", "data.top_k must be >= 0, got -1"},
      {"data.top_p=0", "data.top_p must be in (0, 1], got 0"},
      {"data.top_p=1.5", "data.top_p must be in (0, 1], got 1.5"},
      {"student.svid=pca", "student.svid must be one of nmf, svd, none; got 'pca'"},
      {"student.ste=relu", "student.ste must be one of tanh, identity, clipped; got 'relu'"},
      {"student.latent_init=zero", "student.latent_init must be one of scaled, keep; got 'zero'"},
      {"student.latent_scale=0", "student.latent_scale must be > 0"},
      {"student.layers=(", "student.layers is not a valid regular expression: '('"},
      {"student.latent_dtype=fp16", "student.latent_dtype must be one of fp32, bf16; got 'fp16'"},
      {"optim.state_dtype=fp16", "optim.state_dtype must be one of fp32, bf16, int8; got 'fp16'"},
      {"student.progressive_steps=-1", "student.progressive_steps"},
      {"student.progressive_order=random", "student.progressive_order must be one of first_to_last, last_to_first"},
      {"model.dtype=int8", "model.dtype must be one of fp32, bf16, fp16; got 'int8'"},
      {"model.device=gpu", "model.device must be auto, cpu, cuda or cuda:N, got 'gpu'"},
      {"model.teacher=", "model.teacher must be set"},
      {"train.precision=fp8", "train.precision must be one of fp32, bf16, fp16; got 'fp8'"},
      {"train.loss_scale_init=0", "train.loss_scale_init must be > 0, got 0"},
      {"train.loss_scale_growth_interval=0", "train.loss_scale_growth_interval must be > 0, got 0"},
      {"train.epochs=0", "train.epochs must be > 0"},
      {"train.max_steps=-1", "train.max_steps must be >= 0"},
      {"train.log_every=0", "train.log_every must be > 0"},
      {"train.save_every=-1", "train.save_every must be >= 0"},
      {"train.keep_last=0", "train.keep_last must be > 0"},
      {"train.resume=", "train.resume must be auto, never or a checkpoint folder"},
      {"train.max_bad_steps=0", "train.max_bad_steps must be > 0"},
      {"train.eval_every=-5", "train.eval_every must be >= 0"},
      {"train.eval_seq_len=0", "train.eval_seq_len must be > 0"},
      {"train.eval_windows=-1", "train.eval_windows must be >= 0"},
      {"kd.kd_loss_scale=-1", "kd.kd_loss_scale must be >= 0"},
      {"kd.chunk_tokens=0", "kd.chunk_tokens must be > 0"},
      {"kd.temperature=0", "kd.temperature must be > 0, got 0"},
      {"kd.top_k=-1", "kd.top_k must be >= 0, got -1"},
      {"data.mix_fraction=1", "data.mix_fraction must be in [0, 1), got 1"},
      {"data.mix_fraction=0.2", "data.mix_text must be set when data.mix_fraction > 0, got ''"},
      {"optim.gh_lr_scale=-2", "optim.gh_lr_scale must be > 0, got -2"},
      {"embedded.num_heads=3", "embedded.hidden_size must be an even multiple of embedded.num_heads (3)"},
      {"embedded.num_kv_heads=3", "embedded.num_kv_heads must be a divisor of embedded.num_heads (4)"},
      {"embedded.lr=0", "embedded.lr must be > 0"},
      {"embedded.seq_len=0", "embedded.seq_len must be > 0"},
      {"output_dir=", "output_dir must be set"},
  };
  for (const auto& c : cases) {
    INFO(c.override_);
    CHECK_THROWS_WITH(parse("", {c.override_}), OB_CONTAINS(c.message));
  }
  CHECK_THROWS_WITH(parse("", {"kd.kd_loss_scale=0", "kd.alpha=0", "kd.ce_weight=0"}),
                    OB_CONTAINS("the loss would be zero"));
  CHECK_NOTHROW(parse("", {"model.device=cuda:3", "data.source=dataset", "data.path=d"}));
}

TEST_CASE("config: train.global_batch fixes batch x accumulation x ranks, or derives the accumulation", "[config]") {
  using onebit::config::grad_accum_for;
  // Not set: optim.grad_accum as given, any world size.
  CHECK(grad_accum_for(parse("", {"optim.grad_accum=3"}), 5) == 3);
  // The LLaMA-7B recipe's 128 = 4 per device x 4 x 8 GPUs, given or derived.
  const TrainConfig fixed = parse("", {"train.global_batch=128", "data.batch_size=4", "optim.grad_accum=4"});
  CHECK(grad_accum_for(fixed, 8) == 4);
  const TrainConfig derived = parse("", {"train.global_batch=128", "data.batch_size=4", "optim.grad_accum=0"});
  CHECK(grad_accum_for(derived, 8) == 4);
  CHECK(grad_accum_for(derived, 4) == 8);
  CHECK(grad_accum_for(derived, 32) == 1);
  CHECK_THROWS_WITH(grad_accum_for(fixed, 4),
                    OB_CONTAINS("config: train.global_batch=128 but data.batch_size (4) x optim.grad_accum (4) x world "
                                "size (4) = 64; set optim.grad_accum=8 (or 0 to derive it)"));
  CHECK_THROWS_WITH(grad_accum_for(fixed, 3), OB_CONTAINS("x world size (3) = 48") && !OB_CONTAINS("set optim"));
  CHECK_THROWS_WITH(grad_accum_for(derived, 3),
                    OB_CONTAINS("config: train.global_batch=128 is not a multiple of data.batch_size (4) x world size "
                                "(3) = 12"));
  CHECK_THROWS_WITH(grad_accum_for(derived, 64), OB_CONTAINS("x world size (64) = 256"));

  // The paper recipes (method.md §5): 4 x 4 on 8 GPUs for the 7B models, 2 x 2 on 16 for 13B.
  for (const auto& [recipe, global, gpus, accum] : std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>>{
           {"llama7b", 128, 8, 4}, {"llama2-7b", 128, 8, 4}, {"llama13b", 64, 16, 2}, {"llama2-13b", 64, 16, 2}}) {
    INFO(recipe);
    const TrainConfig r = load_train_config((onebit::test::source_dir() / "configs" / (recipe + ".yaml")).string());
    CHECK(r.train.global_batch == global);
    CHECK(grad_accum_for(r, gpus) == accum);
  }
}

TEST_CASE("config: to_yaml writes every key and reloads to the same config", "[config]") {
  const TrainConfig a = parse("", {"model.teacher=/models/llama \"7b\"", "optim.lr=4e-4", "optim.eps=1e-8",
                                   "kd.alpha=1", "data.seed=18446744073", "student.layers=self_attn\\.(q|k)_proj",
                                   "train.eval_text=held out.txt", "optim.grad_clip=0.3333333333333333",
                                   "model.gradient_checkpointing=true"});
  const std::string y = a.to_yaml();
  const TrainConfig b = parse_train_config(y, {}, "saved.yaml");
  CHECK(b.to_yaml() == y);
  CHECK(b.model.teacher == a.model.teacher);
  CHECK(b.optim.lr == a.optim.lr);
  CHECK(b.optim.eps == a.optim.eps);
  CHECK(b.optim.grad_clip == a.optim.grad_clip);
  CHECK(b.data.seed == a.data.seed);
  CHECK(b.student.layers == a.student.layers);
  CHECK(b.train.eval_text == a.train.eval_text);
  CHECK(b.model.gradient_checkpointing);
  CHECK(y.find("  lr: 0.0004  #") != std::string::npos);  // shortest exact decimal
  CHECK(y.find("  alpha: 1.0  #") != std::string::npos);

  // Every key appears: as many "key: " lines as fields, one per default-struct member.
  size_t lines = 0;
  std::istringstream is(y);
  for (std::string line; std::getline(is, line);)
    if (line.rfind("  ", 0) == 0 || line.rfind("output_dir", 0) == 0) ++lines;
  CHECK(lines == 84);

  // And from a file.
  const auto path = std::filesystem::temp_directory_path() / "onebit_test_config_roundtrip.yaml";
  std::ofstream(path) << y;
  CHECK(load_train_config(path.string()).to_yaml() == y);
  std::filesystem::remove(path);
}

TEST_CASE("config: docs/configuration.md lists every key with its to_yaml() default", "[config]") {
  std::ifstream in(onebit::test::source_dir() / "docs/configuration.md");
  REQUIRE(in);
  const std::string docs((std::istreambuf_iterator<char>(in)), {});
  std::istringstream y(TrainConfig().to_yaml());
  std::string section;
  int keys = 0;
  for (std::string line; std::getline(y, line);) {
    if (line.empty() || line[0] == '#') continue;
    const bool nested = line.rfind("  ", 0) == 0;
    const auto colon = line.find(':');
    const std::string name = line.substr(nested ? 2 : 0, colon - (nested ? 2 : 0));
    const auto hash = line.find("  # ");
    if (!nested && hash == std::string::npos) {  // a section header
      section = name;
      continue;
    }
    const std::string value = line.substr(colon + 2, hash - colon - 2);
    const std::string key = nested ? section + "." + name : name;
    INFO(key);
    CHECK(docs.find("| `" + key + "` | `" + value + "` |") != std::string::npos);
    ++keys;
  }
  CHECK(keys == 84);
}

TEST_CASE("config: resume_conflicts names what makes a checkpoint another run's", "[config]") {
  const TrainConfig saved = parse("");
  // Length, optimizer, loss weights, placement and bookkeeping may change on resume.
  CHECK(onebit::config::resume_conflicts(
            saved, parse("", {"train.max_steps=9", "optim.lr=1e-5", "kd.alpha=0", "model.device=cpu",
                              "model.gradient_checkpointing=true", "output_dir=elsewhere", "train.precision=fp32"}))
            .empty());
  const auto diffs =
      onebit::config::resume_conflicts(saved, parse("", {"embedded.hidden_size=64", "student.svid=svd", "data.seed=3"}));
  REQUIRE(diffs.size() == 3);
  CHECK(diffs[0] == "student.svid: was \"nmf\", now \"svd\"");
  CHECK(diffs[1] == "embedded.hidden_size: was 128, now 64");
  CHECK(diffs[2] == "data.seed: was 0, now 3");
  // The sharding mode and bucket size define the layout of the checkpointed optimizer state.
  CHECK(onebit::config::resume_conflicts(saved, parse("", {"dist.sharding=gradients", "dist.timeout_s=9"})) ==
        std::vector<std::string>{"dist.sharding: was \"none\", now \"gradients\""});
}
