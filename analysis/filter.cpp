#include "analysis/filter.hpp"

#include <fmt/format.h>

#include <cctype>
#include <cstdlib>

#include "analysis/frame.hpp"

namespace dnnscape::analysis {

struct Filter::Node {
  enum class Kind { and_, or_, cmp } kind = Kind::cmp;
  std::unique_ptr<Node> lhs, rhs;
  std::string column, op, value;
  bool value_is_number = false;
  double number = 0;
};

namespace {

struct Token {
  enum class Kind { name, op, lparen, rparen, and_, or_, end } kind;
  std::string text;
  std::size_t pos;
  bool quoted = false;
};

[[noreturn]] void fail(const std::string& what, std::size_t pos) {
  throw InputError(fmt::format("--where: {} at column {}", what, pos + 1));
}

std::vector<Token> tokenize(const std::string& s) {
  std::vector<Token> out;
  std::size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '(') {
      out.push_back({Token::Kind::lparen, "(", i++});
    } else if (c == ')') {
      out.push_back({Token::Kind::rparen, ")", i++});
    } else if (s.compare(i, 2, "&&") == 0) {
      out.push_back({Token::Kind::and_, "&&", i});
      i += 2;
    } else if (s.compare(i, 2, "||") == 0) {
      out.push_back({Token::Kind::or_, "||", i});
      i += 2;
    } else if (c == '=' || c == '!' || c == '<' || c == '>') {
      std::string op(1, c);
      if (i + 1 < s.size() && s[i + 1] == '=') op += '=';
      if (op == "=" || op == "!") fail(fmt::format("unknown operator '{}'", op), i);
      out.push_back({Token::Kind::op, op, i});
      i += op.size();
    } else if (c == '\'' || c == '"') {
      const auto end = s.find(c, i + 1);
      if (end == std::string::npos) fail("unterminated quote", i);
      out.push_back({Token::Kind::name, s.substr(i + 1, end - i - 1), i, true});
      i = end + 1;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
               c == '+') {
      const std::size_t start = i;
      while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_' ||
                              s[i] == '.' || s[i] == '-' || s[i] == '+' || s[i] == ':')) {
        ++i;
      }
      out.push_back({Token::Kind::name, s.substr(start, i - start), start});
    } else {
      fail(fmt::format("unexpected character '{}'", c), i);
    }
  }
  out.push_back({Token::Kind::end, "", s.size()});
  return out;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> t) : t_(std::move(t)) {}

  std::unique_ptr<Filter::Node> parse() {
    auto n = expr();
    if (t_[i_].kind != Token::Kind::end) fail(fmt::format("unexpected '{}'", t_[i_].text), pos());
    return n;
  }

 private:
  std::size_t pos() const { return t_[i_].pos; }

  std::unique_ptr<Filter::Node> expr() {
    auto lhs = conj();
    while (t_[i_].kind == Token::Kind::or_) {
      ++i_;
      auto n = std::make_unique<Filter::Node>();
      n->kind = Filter::Node::Kind::or_;
      n->lhs = std::move(lhs);
      n->rhs = conj();
      lhs = std::move(n);
    }
    return lhs;
  }

  std::unique_ptr<Filter::Node> conj() {
    auto lhs = atom();
    while (t_[i_].kind == Token::Kind::and_) {
      ++i_;
      auto n = std::make_unique<Filter::Node>();
      n->kind = Filter::Node::Kind::and_;
      n->lhs = std::move(lhs);
      n->rhs = atom();
      lhs = std::move(n);
    }
    return lhs;
  }

  std::unique_ptr<Filter::Node> atom() {
    if (t_[i_].kind == Token::Kind::lparen) {
      ++i_;
      auto n = expr();
      if (t_[i_].kind != Token::Kind::rparen) fail("expected ')'", pos());
      ++i_;
      return n;
    }
    if (t_[i_].kind != Token::Kind::name || t_[i_].quoted) {
      fail(t_[i_].kind == Token::Kind::end
               ? "expected a column name at the end"
               : fmt::format("expected a column name, got '{}'", t_[i_].text),
           pos());
    }
    auto n = std::make_unique<Filter::Node>();
    n->column = t_[i_++].text;
    if (t_[i_].kind != Token::Kind::op)
      fail(fmt::format("expected a comparison (==, !=, <, <=, >, >=) after '{}'", n->column),
           pos());
    n->op = t_[i_++].text;
    if (t_[i_].kind != Token::Kind::name)
      fail(fmt::format("expected a value after '{}'", n->op), pos());
    n->value = t_[i_].text;
    if (!t_[i_].quoted && !n->value.empty()) {
      char* end = nullptr;
      n->number = std::strtod(n->value.c_str(), &end);
      n->value_is_number = end != nullptr && *end == '\0';
    }
    ++i_;
    return n;
  }

  std::vector<Token> t_;
  std::size_t i_ = 0;
};

template <class T>
bool compare(const T& a, const std::string& op, const T& b) {
  if (op == "==") return a == b;
  if (op == "!=") return a != b;
  if (op == "<") return a < b;
  if (op == "<=") return a <= b;
  if (op == ">") return a > b;
  return a >= b;
}

void collect(const Filter::Node* n, std::vector<std::string>& out) {
  if (n == nullptr) return;
  if (n->kind == Filter::Node::Kind::cmp) {
    for (const auto& c : out)
      if (c == n->column) return;
    out.push_back(n->column);
    return;
  }
  collect(n->lhs.get(), out);
  collect(n->rhs.get(), out);
}

std::vector<char> eval(const Filter::Node& n, const Frame& f) {
  if (n.kind != Filter::Node::Kind::cmp) {
    auto a = eval(*n.lhs, f);
    const auto b = eval(*n.rhs, f);
    const bool conj = n.kind == Filter::Node::Kind::and_;
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = conj ? (a[i] && b[i]) : (a[i] || b[i]);
    return a;
  }
  std::vector<char> out(f.rows, 0);
  if (auto it = f.text.find(n.column); it != f.text.end()) {
    // Compare each level once, then map codes.
    const auto& c = it->second;
    std::vector<char> level_ok(c.levels.size());
    for (std::size_t l = 0; l < c.levels.size(); ++l)
      level_ok[l] = compare(c.levels[l], n.op, n.value) ? 1 : 0;
    for (std::size_t i = 0; i < f.rows; ++i) out[i] = level_ok[c.codes[i]];
    return out;
  }
  if (auto it = f.numeric.find(n.column); it != f.numeric.end()) {
    if (!n.value_is_number) {
      throw InputError(fmt::format("--where: column '{}' is numeric but '{}' is not a number",
                                   n.column, n.value));
    }
    const auto& v = it->second;
    for (std::size_t i = 0; i < f.rows; ++i) out[i] = compare(v[i], n.op, n.number) ? 1 : 0;
    return out;
  }
  throw InputError(fmt::format("--where: {} has no column '{}'", f.path.string(), n.column));
}

}  // namespace

Filter::Filter() = default;
Filter::~Filter() = default;
Filter::Filter(Filter&&) noexcept = default;
Filter& Filter::operator=(Filter&&) noexcept = default;

Filter Filter::parse(const std::string& expression) {
  Filter f;
  bool blank = true;
  for (char c : expression)
    if (!std::isspace(static_cast<unsigned char>(c))) blank = false;
  if (blank) return f;
  f.root_ = Parser(tokenize(expression)).parse();
  return f;
}

bool Filter::empty() const {
  return root_ == nullptr;
}

std::vector<std::string> Filter::columns() const {
  std::vector<std::string> out;
  collect(root_.get(), out);
  return out;
}

void Filter::apply(const Frame& frame, std::vector<char>& keep) const {
  if (!root_) return;
  const auto r = eval(*root_, frame);
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = keep[i] && r[i];
}

}  // namespace dnnscape::analysis
