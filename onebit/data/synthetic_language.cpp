#include "onebit/data/synthetic_language.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>

#include "onebit/core/error.h"
#include "onebit/data/seed.h"
#include "onebit/io/safetensors.h"

namespace onebit::data::synthetic {

namespace {

using Words = std::vector<std::string>;
using Forms = std::vector<std::pair<std::string, std::string>>;  // {singular, plural}

// ---------------------------------------------------------------------------------------
// Lexicon
// ---------------------------------------------------------------------------------------
const Words kMale = {"tom", "ben", "sam", "max", "leo", "jack", "finn", "noah", "owen", "luke",
                     "adam", "eli", "hugo", "ivan", "jake", "kai", "liam", "milo", "nico", "oscar"};
const Words kFemale = {"mia", "lily", "anna", "emma", "zoe", "lucy", "ella", "ava", "ruby", "rose",
                       "nora", "ivy", "kate", "lena", "maya", "sara", "tara", "amy", "eve", "jade"};
const Words kMaleKind = {"boy", "man", "king", "prince", "farmer", "baker"};
const Words kFemaleKind = {"girl", "woman", "queen", "princess", "nurse", "dancer"};
const Words kPersonAdj = {"little", "brave", "kind", "shy", "happy", "clever", "tall", "young",
                          "old", "quiet", "funny", "curious", "gentle", "busy"};
const Forms kAnimals = {{"dog", "dogs"},     {"cat", "cats"},   {"bird", "birds"}, {"fox", "foxes"},
                        {"rabbit", "rabbits"}, {"frog", "frogs"}, {"duck", "ducks"}, {"horse", "horses"},
                        {"mouse", "mice"},   {"bear", "bears"}, {"owl", "owls"},   {"goat", "goats"},
                        {"lion", "lions"},   {"pig", "pigs"},   {"cow", "cows"},   {"wolf", "wolves"},
                        {"bee", "bees"},     {"ant", "ants"},   {"snail", "snails"}, {"puppy", "puppies"}};
const Words kAnimalAdj = {"big", "small", "fluffy", "old", "young", "tiny", "noisy", "sleepy",
                          "hungry", "friendly", "wild", "lazy"};
const Words kColors = {"red", "blue", "green", "yellow", "purple", "orange",
                       "pink", "white", "black", "brown", "gray", "golden"};
const Words kObjects = {"ball",   "kite",   "book",    "hat",    "box",    "cup",   "boat",   "bike",
                        "drum",   "doll",   "car",     "train",  "key",    "apple", "cake",   "shoe",
                        "coat",   "bag",    "lamp",    "clock",  "map",    "rope",  "shell",  "stone",
                        "flower", "basket", "bottle",  "chair",  "pencil", "spoon", "bell",   "ring",
                        "scarf",  "blanket", "candle", "sock",   "truck",  "wagon", "umbrella", "egg"};
const Words kSizes = {"big", "small", "new", "old", "shiny", "soft"};
const Words kPlaces = {"park",  "garden", "kitchen", "forest", "river",  "school", "beach",  "farm",
                       "hill",  "lake",   "house",   "barn",   "city",   "market", "library", "castle",
                       "field", "cave",   "meadow",  "pond",   "bridge", "tree",  "yard",   "street"};
const Words kPreps = {"in", "near", "under", "behind", "by", "at", "across", "around", "inside", "beside"};
const Forms kIntrans = {{"runs", "run"},     {"walks", "walk"},   {"jumps", "jump"},   {"plays", "play"},
                        {"sings", "sing"},   {"dances", "dance"}, {"sleeps", "sleep"}, {"swims", "swim"},
                        {"hides", "hide"},   {"waits", "wait"},   {"sits", "sit"},     {"rests", "rest"},
                        {"laughs", "laugh"}, {"climbs", "climb"}, {"reads", "read"},   {"cries", "cry"},
                        {"hops", "hop"},     {"wanders", "wander"}};
const Forms kMotion = {{"goes", "go"},     {"runs", "run"},         {"walks", "walk"}, {"rides", "ride"},
                       {"hurries", "hurry"}, {"travels", "travel"}, {"comes", "come"}};
const Forms kTrans = {{"likes", "like"}, {"finds", "find"},   {"wants", "want"},   {"loves", "love"},
                      {"holds", "hold"}, {"carries", "carry"}, {"paints", "paint"}, {"washes", "wash"},
                      {"drops", "drop"}, {"takes", "take"},   {"cleans", "clean"}, {"hides", "hide"}};
const Forms kSee = {{"sees", "see"}, {"watches", "watch"}, {"finds", "find"}, {"meets", "meet"}, {"hears", "hear"}};
const Forms kGive = {{"gives", "give"}, {"shows", "show"}, {"throws", "throw"}, {"sends", "send"}};
const Forms kBe = {{"is", "are"}, {"has", "have"}, {"was", "were"}, {"feels", "feel"}};
const Words kFeelings = {"happy", "sad", "tired", "hungry", "excited", "scared", "proud",
                         "sleepy", "angry", "calm", "glad", "worried", "surprised", "bored"};
const Words kNumbers = {"two", "three", "four", "five"};
const Words kOpeners = {"one day ,", "in the morning ,", "later ,", "then ,", "after that ,", "soon ,",
                        "that evening ,", "at noon ,", "next ,"};
const Words kReasons = {"the sun is warm", "the wind is cold", "it is raining", "the sky is clear",
                        "the day is long", "it is late"};
const Words kFunction = {"once", "upon",  "a",    "an",    "the", "time",  "there", "named", "and",  "to",
                         "his",  "her",   "he",  "she",   "they",  "it",    "friend", "because", "very", "home",
                         "of",   "end",   "day",  "back",  "looks", "for", "everywhere", "finally", ",",  ".",
                         "!",    "says",  "thank", "you", "lives", "live"};

bool starts_with_vowel(const std::string& w) { return !w.empty() && std::string("aeiou").find(w[0]) != std::string::npos; }
std::string article(const std::string& next) { return starts_with_vowel(next) ? "an" : "a"; }

// ---------------------------------------------------------------------------------------
// Story state
// ---------------------------------------------------------------------------------------
struct Person {
  std::string name, kind, adj;
  bool female = false;
  std::string subj() const { return female ? "she" : "he"; }
  std::string obj() const { return female ? "her" : "him"; }
  std::string poss() const { return female ? "her" : "his"; }
};

struct Thing {
  std::string noun, color, size;
  int owner = 0;  // index into the story's people
  std::string full() const { return (size.empty() ? "" : size + " ") + color + " " + noun; }
};

class Story {
 public:
  explicit Story(uint64_t seed) : rng_(seed) {}

  std::string tell() {
    introduce();
    const int events = 4 + int(rng_.below(5));  // 4..8 sentences after the introduction
    for (int e = 0; e < events; ++e) event();
    ending();
    std::string out;
    for (const auto& w : words_) out += (out.empty() ? "" : " ") + w;
    return out;
  }

 private:
  SplitMix rng_;
  std::vector<std::string> words_;
  std::vector<Person> people_;
  std::vector<Thing> things_;
  std::string place_, home_;
  int last_ = -1;  // who the previous sentence was about: person index, 2 = both, -1 = none

  template <class T>
  const T& pick(const std::vector<T>& v) { return v[size_t(rng_.below(v.size()))]; }
  bool chance(double p) { return rng_.uniform() < p; }
  void say(const std::string& phrase) {
    std::istringstream is(phrase);
    for (std::string w; is >> w;) words_.push_back(w);
  }
  static const std::string& form(const std::pair<std::string, std::string>& f, bool plural) {
    return plural ? f.second : f.first;
  }

  Person new_person() {
    Person p;
    p.female = chance(0.5);
    for (;;) {
      p.name = pick(p.female ? kFemale : kMale);
      bool taken = false;
      for (const auto& q : people_) taken |= q.name == p.name;
      if (!taken) break;
    }
    p.kind = pick(p.female ? kFemaleKind : kMaleKind);
    p.adj = pick(kPersonAdj);
    return p;
  }

  // The subject for `who` (0, 1 or 2 = both): a pronoun when the previous sentence was
  // about the same referent, else the name(s). Returns whether the subject is plural.
  bool subject(int who) {
    const bool plural = who == 2;
    if (who == last_ && chance(0.6)) {
      say(plural ? "they" : people_[size_t(who)].subj());
    } else if (plural) {
      say(people_[0].name + " and " + people_[1].name);
    } else {
      say(people_[size_t(who)].name);
    }
    last_ = who;
    return plural;
  }

  int someone() { return int(rng_.below(5)) % 3; }  // each person 2/5, both together 1/5

  Thing& new_thing(int owner) {
    Thing t;
    for (;;) {
      t.noun = pick(kObjects);
      bool taken = false;
      for (const auto& u : things_) taken |= u.noun == t.noun;
      if (!taken) break;
    }
    t.color = pick(kColors);
    if (chance(0.3)) t.size = pick(kSizes);
    t.owner = owner;
    things_.push_back(t);
    return things_.back();
  }

  void introduce() {
    people_.push_back(new_person());
    const Person& a = people_[0];
    say(chance(0.5) ? "once upon a time , there was" : "there is");
    say(article(a.adj) + " " + a.adj + " " + a.kind + " named " + a.name + " .");
    last_ = 0;
    people_.push_back(new_person());
    subject(0);
    say(form(kBe[1], false) + " " + article("friend") + " friend named " + people_[1].name + " .");
    home_ = pick(kPlaces);
    place_ = home_;
    subject(chance(0.5) ? 0 : 2);
    say(std::string(last_ == 2 ? "live" : "lives") + " near the " + home_ + " .");
    const int owner = int(rng_.below(2));
    Thing& t = new_thing(owner);
    subject(owner);
    say("has " + article(t.full()) + " " + t.full() + " .");
  }

  void event() {
    uint64_t kind = rng_.below(9);
    if (kind == 7 && things_.size() >= 3) kind = 1;  // at most three objects per story
    if (chance(0.35)) say(pick(kOpeners));
    switch (kind) {
      case 0: {  // move
        const bool pl = subject(someone());
        std::string to;
        do to = pick(kPlaces);
        while (to == place_);
        place_ = to;
        say(form(pick(kMotion), pl) + " to the " + to + " .");
        break;
      }
      case 1: {  // activity at the current place
        const bool pl = subject(someone());
        say(form(pick(kIntrans), pl) + " " + pick(kPreps) + " the " + place_ + " .");
        break;
      }
      case 2: {  // an existing object, with its colour from the introduction
        const Thing& t = pick(things_);
        const int who = someone();
        const bool pl = subject(who);
        const bool own = who == t.owner;
        say(form(pick(kTrans), pl) + " " + (own ? people_[size_t(who)].poss() : std::string("the")) + " " +
            t.full() + " .");
        break;
      }
      case 3: {  // giving changes the owner
        Thing& t = things_[size_t(rng_.below(things_.size()))];
        const int from = t.owner, to = 1 - from;
        subject(from);
        say(form(pick(kGive), false) + " the " + t.full() + " to " + people_[size_t(to)].name + " .");
        t.owner = to;
        if (chance(0.5)) {
          subject(to);
          say("says , thank you !");
        }
        break;
      }
      case 4: {  // animals: number agreement on the noun and on the following verb
        const bool pl = subject(someone());
        const auto& an = pick(kAnimals);
        const std::string adj = pick(kAnimalAdj);
        const bool many = chance(0.5);
        if (many) {
          say(form(pick(kSee), pl) + " " + pick(kNumbers) + " " + adj + " " + an.second + " " + pick(kPreps) +
              " the " + place_ + " .");
          say("the " + an.second + " " + form(pick(kIntrans), true) + " .");
        } else {
          say(form(pick(kSee), pl) + " " + article(adj) + " " + adj + " " + an.first + " " + pick(kPreps) +
              " the " + place_ + " .");
          say("the " + an.first + " " + form(kBe[0], false) + " " + pick(kAnimalAdj) + " .");
        }
        last_ = -1;
        break;
      }
      case 5: {  // feelings with a reason
        const bool pl = subject(someone());
        say(form(chance(0.5) ? kBe[0] : kBe[3], pl) + " " + (chance(0.3) ? "very " : "") + pick(kFeelings));
        say(chance(0.4) ? "because " + pick(kReasons) + " ." : ".");
        break;
      }
      case 6: {  // a colour fact: consistent with the story
        const Thing& t = pick(things_);
        say("the " + t.noun + " " + form(kBe[0], false) + " " + t.color + " .");
        last_ = -1;
        break;
      }
      case 7: {  // a second object, owned by someone
        const int owner = int(rng_.below(2));
        Thing& t = new_thing(owner);
        subject(owner);
        say("finds " + article(t.full()) + " " + t.full() + " " + pick(kPreps) + " the " + place_ + " .");
        break;
      }
      default: {  // lose and search: refers back to the owner and the object
        const Thing& t = pick(things_);
        const Person& p = people_[size_t(t.owner)];
        subject(t.owner);
        say("looks for " + p.poss() + " " + t.full() + " everywhere .");
        say("finally , " + p.subj() + " finds it " + pick(kPreps) + " the " + pick(kPlaces) + " .");
        break;
      }
    }
  }

  void ending() {
    say(chance(0.5) ? "at the end of the day ," : "that evening ,");
    const bool pl = subject(chance(0.6) ? 2 : 0);
    say(form(kMotion[0], pl) + " back home to the " + home_ + " .");
    subject(last_);
    say(form(kBe[0], last_ == 2) + " " + pick(kFeelings) + " .");
  }
};

const Forms& all_verb_forms() {
  static const Forms forms = [] {
    Forms f;
    for (const Forms* list : {&kIntrans, &kMotion, &kTrans, &kSee, &kGive, &kBe})
      for (const auto& p : *list)
        if (std::find(f.begin(), f.end(), p) == f.end()) f.push_back(p);
    f.push_back({"lives", "live"});
    return f;
  }();
  return forms;
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& verb_forms() { return all_verb_forms(); }
const std::vector<std::string>& male_names() { return kMale; }
const std::vector<std::string>& female_names() { return kFemale; }
const std::vector<std::string>& colors() { return kColors; }
const std::vector<std::string>& objects() { return kObjects; }

const std::vector<std::string>& words() {
  static const Words all = [] {
    std::set<std::string> s;
    auto add_phrases = [&](const Words& v) {
      for (const auto& phrase : v) {
        std::istringstream is(phrase);
        for (std::string w; is >> w;) s.insert(w);
      }
    };
    for (const Words* v : {&kMale, &kFemale, &kMaleKind, &kFemaleKind, &kPersonAdj, &kAnimalAdj, &kColors, &kObjects,
                           &kSizes, &kPlaces, &kPreps, &kFeelings, &kNumbers, &kOpeners, &kReasons, &kFunction})
      add_phrases(*v);
    for (const auto& p : kAnimals) s.insert({p.first, p.second});
    for (const auto& p : all_verb_forms()) s.insert({p.first, p.second});
    return Words(s.begin(), s.end());
  }();
  return all;
}

std::vector<std::string> token_vocabulary() {
  std::vector<std::string> v = {"<unk>", "<s>", "</s>"};
  const auto& w = words();
  v.insert(v.end(), w.begin(), w.end());
  return v;
}

int64_t vocab_size() { return int64_t(words().size()) + 3; }

std::string generate_document(uint64_t seed, int64_t index) {
  return Story(mix_seed(seed, uint64_t(index))).tell();
}

std::vector<std::string> generate_documents(int64_t n, uint64_t seed, int64_t first) {
  OB_CHECK(n >= 0 && first >= 0, "synthetic language: bad document range (first ", first, ", n ", n, ")");
  std::vector<std::string> docs;
  docs.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) docs.push_back(generate_document(seed, first + i));
  return docs;
}

std::vector<int64_t> encode(const std::string& text) {
  static const std::unordered_map<std::string, int64_t> ids = [] {
    std::unordered_map<std::string, int64_t> m;
    const auto v = token_vocabulary();
    for (size_t i = 0; i < v.size(); ++i) m.emplace(v[i], int64_t(i));
    return m;
  }();
  std::vector<int64_t> out;
  std::istringstream is(text);
  for (std::string w; is >> w;) {
    auto it = ids.find(w);
    out.push_back(it == ids.end() ? kUnkId : it->second);
  }
  return out;
}

TokenDataset token_dataset(int64_t n, uint64_t seed, int64_t first) {
  std::vector<std::vector<int64_t>> samples;
  samples.reserve(size_t(std::max<int64_t>(n, 0)));
  for (const auto& d : generate_documents(n, seed, first)) samples.push_back(encode(d));
  return TokenDataset::from_samples(samples, vocab_size());
}

void write_documents(const std::string& path, const std::vector<std::string>& docs) {
  std::string text;
  for (const auto& d : docs) text += (text.empty() ? "" : "\n") + d + "\n";
  io::write_file_atomic(path, text);
}

void write_tokenizer(const std::string& dir) {
  using nlohmann::json;
  using nlohmann::ordered_json;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  OB_CHECK(!ec, "cannot create tokenizer folder '", dir, "': ", ec.message());

  const auto vocab = token_vocabulary();
  ordered_json vocab_map = ordered_json::object();
  for (size_t i = 0; i < vocab.size(); ++i) vocab_map[vocab[i]] = i;
  ordered_json added = ordered_json::array();
  for (int64_t id : {kUnkId, kBosId, kEosId})
    added.push_back({{"id", id},
                     {"content", vocab[size_t(id)]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  ordered_json bos_piece = {{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}};
  ordered_json tok;
  tok["version"] = "1.0";
  tok["truncation"] = nullptr;
  tok["padding"] = nullptr;
  tok["added_tokens"] = added;
  tok["normalizer"] = nullptr;
  tok["pre_tokenizer"] = {{"type", "WhitespaceSplit"}};
  tok["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair",
       {bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, bos_piece,
        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {kBosId}}, {"tokens", {"<s>"}}}}}}};
  tok["decoder"] = nullptr;
  tok["model"] = {{"type", "WordLevel"}, {"vocab", vocab_map}, {"unk_token", "<unk>"}};

  ordered_json cfg;
  cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  cfg["bos_token"] = "<s>";
  cfg["eos_token"] = "</s>";
  cfg["unk_token"] = "<unk>";
  cfg["add_bos_token"] = true;
  cfg["add_eos_token"] = false;
  cfg["model_max_length"] = 1000000;
  cfg["clean_up_tokenization_spaces"] = false;

  io::write_file_atomic(dir + "/tokenizer.json", tok.dump(2) + "\n");
  io::write_file_atomic(dir + "/tokenizer_config.json", cfg.dump(2) + "\n");
}

}  // namespace onebit::data::synthetic
