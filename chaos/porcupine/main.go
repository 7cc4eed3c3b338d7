// Command ledger-porcupine checks a bank-workload history (chaos/history.py)
// for linearizability with Porcupine (github.com/anishathalye/porcupine).
//
//	ledger-porcupine -history run/history.jsonl -initial run/initial.json \
//	    [-present run/present.json] [-timeout 60s] [-visualize run/linearizability.html] \
//	    [-model nondeterministic|deterministic]
//
// The sequential specification is the ledger's bank: a map account -> net
// balance (credits_posted - debits_posted) that starts at -initial. Every
// account has debits_must_not_exceed_credits, so
//
//	transfer(from, to, amount) -> ok               legal iff net[from] >= amount; moves amount
//	transfer(from, to, amount) -> exceeds_credits  legal iff net[from] <  amount; no change
//	read() -> balances                             legal iff balances == net, exactly
//
// A rejection with exceeds_credits is a definite observation of the state and is
// linearized like a read. Other "fail" completions (a refused request, a failed
// read) did not happen and observed nothing: they are left out. Each operation
// is one porcupine.Operation with ClientId = the history's process and Call /
// Return = its invoke / completion time_ns.
//
// Unknown outcomes ("info", or an invoke never completed) are treated the way
// Porcupine's own tests treat Jepsen's timed-out operations (parseJepsenLog in
// porcupine_test.go): the operation returns at the end of time (Return =
// math.MaxInt64) with output "unknown", and the model accepts it. It may then be
// linearized anywhere after its invoke, and "never happened" is the same as
// being linearized after every other operation, where nobody sees its effect.
//
//   - -model nondeterministic (default) uses porcupine.NondeterministicModel: an
//     unknown transfer leads to {applied, unchanged} when the balance allows it
//     and to {unchanged} otherwise; ToModel's power-set construction carries both.
//   - -model deterministic: an unknown transfer does what the ledger would do
//     where it is linearized (apply if the balance allows, else nothing). That
//     accepts the same histories (see deterministicStep); kept to cross-check.
//
// Either way a non-linearizable history with a few dozen unknown transfers that
// never happened makes the search exponential (every subset of them is a
// candidate) and the check times out instead of failing. -present leaves those
// out, using the final state (see resolveUnknown); chaos/checkers.py passes it.
//
// Exit status: 0 linearizable, 1 not linearizable, 2 undecided (timed out),
// 3 bad input. One line of JSON on stdout summarises the check.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

const (
	exitLinearizable    = 0
	exitNotLinearizable = 1
	exitUndecided       = 2
	exitBadInput        = 3

	// A history line longer than this is bad input, not a reason to grow without bound.
	lineBytesMax = 16 << 20
)

type opKind uint8

const (
	kindRead opKind = iota
	kindTransfer
)

type outcome uint8

const (
	outcomeOK outcome = iota
	outcomeExceedsCredits
	outcomeUnknown
)

func (o outcome) String() string {
	switch o {
	case outcomeOK:
		return "ok"
	case outcomeExceedsCredits:
		return "exceeds_credits"
	default:
		return "unknown"
	}
}

// input of one operation; accounts are indices into bank.accounts.
type input struct {
	kind   opKind
	id     string // transfer id
	from   int
	to     int
	amount int64
}

// output of one operation: outcome for a transfer, balances for a read.
type output struct {
	outcome  outcome
	balances []int64
}

// meta identifies an operation in the history file (for the visualization and evidence).
type meta struct {
	Index   int64 `json:"index"`
	Process int   `json:"process"`
	CallNs  int64 `json:"invoke_ns"`
	// ReturnNs is -1 for an operation whose outcome is unknown.
	ReturnNs int64 `json:"complete_ns"`
}

// bank holds what the model needs besides its state: account ids in a fixed order.
type bank struct {
	accounts []string // sorted account ids (decimal strings, as in the history's reads)
	index    map[string]int
	initial  state
}

// state is the model's state: net balances indexed like bank.accounts. Never
// modified in place: a step that changes it returns a copy.
type state []int64

func (b *bank) describeState(s state) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprintf("%s:%d", b.accounts[i], v)
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func equalStates(a, b state) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func hashState(s state) uint64 {
	h := fnv.New64a()
	var buf [8]byte
	for _, v := range s {
		binary.LittleEndian.PutUint64(buf[:], uint64(v))
		h.Write(buf[:])
	}
	return h.Sum64()
}

func applyTransfer(s state, in input) state {
	next := make(state, len(s))
	copy(next, s)
	next[in.from] -= in.amount
	next[in.to] += in.amount
	return next
}

// stepDefinite steps a read or a transfer whose outcome is known.
func stepDefinite(s state, in input, out output) (bool, state) {
	if in.kind == kindRead {
		return equalStates(s, out.balances), s
	}
	sufficient := s[in.from] >= in.amount
	if out.outcome == outcomeOK {
		if !sufficient {
			return false, s
		}
		return true, applyTransfer(s, in)
	}
	return !sufficient, s // exceeds_credits: a rejection observed the balance
}

// nondeterministicStep: an unknown transfer happened or never reached the ledger.
func nondeterministicStep(s state, in input, out output) []interface{} {
	if in.kind == kindTransfer && out.outcome == outcomeUnknown {
		if s[in.from] >= in.amount {
			return []interface{}{applyTransfer(s, in), s}
		}
		return []interface{}{s} // rejected with exceeds_credits, or never reached the ledger
	}
	if ok, next := stepDefinite(s, in, out); ok {
		return []interface{}{next}
	}
	return nil
}

// deterministicStep: an unknown transfer does what the ledger would do, here.
// "Never happened" needs no branch of its own: it is the same as being
// linearized after everything else, which a transfer returning at the end of
// time always may be; and a no-op linearized earlier can be moved there
// without changing any other step.
func deterministicStep(s state, in input, out output) (bool, state) {
	if in.kind == kindTransfer && out.outcome == outcomeUnknown {
		if s[in.from] >= in.amount {
			return true, applyTransfer(s, in)
		}
		return true, s
	}
	return stepDefinite(s, in, out)
}

func (b *bank) describeOperation(in input, out output) string {
	if in.kind == kindRead {
		return "read() -> " + b.describeState(out.balances)
	}
	return fmt.Sprintf("transfer#%s(%s->%s, %d) -> %s", in.id, b.accounts[in.from], b.accounts[in.to], in.amount, out.outcome)
}

func (b *bank) deterministicModel() porcupine.Model {
	return porcupine.Model{
		Init: func() interface{} { return b.initial },
		Step: func(s, in, out interface{}) (bool, interface{}) {
			return deterministicStep(s.(state), in.(input), out.(output))
		},
		Equal:                     func(a, c interface{}) bool { return equalStates(a.(state), c.(state)) },
		Hash:                      func(s interface{}) uint64 { return hashState(s.(state)) },
		DescribeOperation:         func(in, out interface{}) string { return b.describeOperation(in.(input), out.(output)) },
		DescribeState:             func(s interface{}) string { return b.describeState(s.(state)) },
		DescribeOperationMetadata: describeMeta,
	}
}

func (b *bank) nondeterministicModel() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []interface{} { return []interface{}{b.initial} },
		Step: func(s, in, out interface{}) []interface{} {
			return nondeterministicStep(s.(state), in.(input), out.(output))
		},
		Equal:                     func(a, c interface{}) bool { return equalStates(a.(state), c.(state)) },
		Hash:                      func(s interface{}) uint64 { return hashState(s.(state)) },
		DescribeOperation:         func(in, out interface{}) string { return b.describeOperation(in.(input), out.(output)) },
		DescribeState:             func(s interface{}) string { return b.describeState(s.(state)) },
		DescribeOperationMetadata: describeMeta,
	}
	return nm.ToModel()
}

func describeMeta(m interface{}) string {
	if m == nil {
		return ""
	}
	md := m.(meta)
	ret := "unknown"
	if md.ReturnNs >= 0 {
		ret = fmt.Sprintf("%.3fs", float64(md.ReturnNs)/1e9)
	}
	return fmt.Sprintf("history index %d, process %d, invoked %.3fs, completed %s", md.Index, md.Process, float64(md.CallNs)/1e9, ret)
}

// record is one line of the history (chaos/history.py).
type record struct {
	Index   int64           `json:"index"`
	Process *int            `json:"process"`
	Type    string          `json:"type"`
	F       string          `json:"f"`
	TimeNs  *int64          `json:"time_ns"`
	Value   json.RawMessage `json:"value"`
}

type transferValue struct {
	ID     json.Number `json:"id"`
	From   json.Number `json:"from"`
	To     json.Number `json:"to"`
	Amount *int64      `json:"amount"`
	Result string      `json:"result"`
}

type readValue struct {
	Balances map[string]int64 `json:"balances"`
}

// counts of what went into the check, for the summary.
type counts struct {
	Reads                   int `json:"reads"`
	TransfersOK             int `json:"transfers_ok"`
	TransfersExceedsCredits int `json:"transfers_exceeds_credits"`
	TransfersUnknown        int `json:"transfers_unknown"`
	// With -present: unknown transfers found in the final state (kept) and not found (left out).
	UnknownPresent int `json:"unknown_present"`
	UnknownAbsent  int `json:"unknown_absent_dropped"`
	Dropped        int `json:"dropped"`
}

type badInput struct{ msg string }

func (e badInput) Error() string { return e.msg }

func bad(format string, args ...interface{}) error {
	return badInput{fmt.Sprintf(format, args...)}
}

func loadInitial(path string) (*bank, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, bad("initial balances: %v", err)
	}
	var m map[string]int64
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, bad("initial balances %s: %v (want {\"<account id>\": net, ...})", path, err)
	}
	if len(m) == 0 {
		return nil, bad("initial balances %s: no accounts", path)
	}
	b := &bank{index: map[string]int{}}
	for a := range m {
		b.accounts = append(b.accounts, a)
	}
	sort.Strings(b.accounts)
	for i, a := range b.accounts {
		b.index[a] = i
		b.initial = append(b.initial, m[a])
	}
	return b, nil
}

func (b *bank) account(n json.Number, what string, rec record) (int, error) {
	i, ok := b.index[n.String()]
	if !ok {
		return 0, bad("history index %d: %s account %q is not among the initial balances", rec.Index, what, n.String())
	}
	return i, nil
}

func (b *bank) balancesVector(m map[string]int64, rec record) ([]int64, error) {
	if len(m) != len(b.accounts) {
		return nil, bad("history index %d: read returned %d accounts, the bank has %d", rec.Index, len(m), len(b.accounts))
	}
	v := make([]int64, len(b.accounts))
	for a, net := range m {
		i, ok := b.index[a]
		if !ok {
			return nil, bad("history index %d: read returned unknown account %q", rec.Index, a)
		}
		v[i] = net
	}
	return v, nil
}

// loadHistory pairs invoke and completion records per process and turns them into operations.
func loadHistory(path string, b *bank) ([]porcupine.Operation, counts, error) {
	var c counts
	f, err := os.Open(path)
	if err != nil {
		return nil, c, bad("history: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), lineBytesMax)
	type open struct {
		rec record
		in  input
	}
	pending := map[int]*open{}
	var ops []porcupine.Operation
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var rec record
		if err := json.Unmarshal([]byte(text), &rec); err != nil {
			return nil, c, bad("history line %d: %v", line, err)
		}
		if rec.Process == nil || rec.TimeNs == nil {
			return nil, c, bad("history line %d: missing process or time_ns", line)
		}
		if rec.F != "read" && rec.F != "transfer" {
			return nil, c, bad("history line %d: unknown operation f=%q", line, rec.F)
		}
		proc := *rec.Process
		if rec.Type == "invoke" {
			if o, busy := pending[proc]; busy {
				return nil, c, bad("history line %d: process %d invoked again while its operation at index %d is open", line, proc, o.rec.Index)
			}
			in := input{kind: kindRead}
			if rec.F == "transfer" {
				var tv transferValue
				if err := json.Unmarshal(rec.Value, &tv); err != nil || tv.Amount == nil || tv.ID == "" {
					return nil, c, bad("history line %d: transfer invoke needs {id, from, to, amount}", line)
				}
				from, err := b.account(tv.From, "from", rec)
				if err != nil {
					return nil, c, err
				}
				to, err := b.account(tv.To, "to", rec)
				if err != nil {
					return nil, c, err
				}
				in = input{kind: kindTransfer, id: tv.ID.String(), from: from, to: to, amount: *tv.Amount}
			}
			pending[proc] = &open{rec: rec, in: in}
			continue
		}
		o, ok := pending[proc]
		if !ok {
			return nil, c, bad("history line %d: %s completion of process %d without an open invoke", line, rec.Type, proc)
		}
		delete(pending, proc)
		if o.rec.F != rec.F {
			return nil, c, bad("history line %d: completion f=%q does not match invoke f=%q", line, rec.F, o.rec.F)
		}
		if *rec.TimeNs < *o.rec.TimeNs {
			return nil, c, bad("history line %d: completes before its invoke", line)
		}
		m := meta{Index: o.rec.Index, Process: proc, CallNs: *o.rec.TimeNs, ReturnNs: *rec.TimeNs}
		op := porcupine.Operation{ClientId: proc, Input: o.in, Call: *o.rec.TimeNs, Return: *rec.TimeNs, Metadata: m}
		switch {
		case rec.F == "read" && rec.Type == "ok":
			var rv readValue
			if err := json.Unmarshal(rec.Value, &rv); err != nil || rv.Balances == nil {
				return nil, c, bad("history line %d: ok read needs {\"balances\": {...}}", line)
			}
			v, err := b.balancesVector(rv.Balances, rec)
			if err != nil {
				return nil, c, err
			}
			op.Output = output{balances: v}
			c.Reads++
		case rec.F == "read": // a failed or unknown read has no effect and observed nothing
			c.Dropped++
			continue
		case rec.Type == "ok":
			op.Output = output{outcome: outcomeOK}
			c.TransfersOK++
		case rec.Type == "fail":
			var tv transferValue
			if err := json.Unmarshal(rec.Value, &tv); err != nil {
				return nil, c, bad("history line %d: %v", line, err)
			}
			if tv.Result != "exceeds_credits" {
				c.Dropped++ // refused as a whole: it did not happen and observed nothing
				continue
			}
			op.Output = output{outcome: outcomeExceedsCredits}
			c.TransfersExceedsCredits++
		case rec.Type == "info":
			op.Output = output{outcome: outcomeUnknown}
			op.Return = math.MaxInt64
			m.ReturnNs = -1
			op.Metadata = m
			c.TransfersUnknown++
		default:
			return nil, c, bad("history line %d: unknown type %q", line, rec.Type)
		}
		ops = append(ops, op)
	}
	if err := sc.Err(); err != nil {
		return nil, c, bad("history: %v", err)
	}
	// Invokes never completed (the run stopped mid-operation): outcome unknown.
	procs := make([]int, 0, len(pending))
	for p := range pending {
		procs = append(procs, p)
	}
	sort.Ints(procs)
	for _, p := range procs {
		o := pending[p]
		if o.in.kind == kindRead {
			c.Dropped++
			continue
		}
		ops = append(ops, porcupine.Operation{
			ClientId: p, Input: o.in, Call: *o.rec.TimeNs, Return: math.MaxInt64,
			Output:   output{outcome: outcomeUnknown},
			Metadata: meta{Index: o.rec.Index, Process: p, CallNs: *o.rec.TimeNs, ReturnNs: -1},
		})
		c.TransfersUnknown++
	}
	return ops, c, nil
}

func loadPresent(path string) (map[string]bool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, bad("present transfer ids: %v", err)
	}
	var ids []json.Number
	if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, bad("present transfer ids %s: %v (want a JSON array of ids)", path, err)
	}
	present := make(map[string]bool, len(ids))
	for _, id := range ids {
		present[id.String()] = true
	}
	return present, nil
}

// resolveUnknown uses the final state, Jepsen's "final read", to leave out the
// unknown transfers that never happened: transfer ids are unique and the ledger
// stores only the transfers it applied, so an unknown transfer absent from the
// final state never changed a balance and leaving it out loses nothing. Those
// are the expensive ones: on a non-linearizable history every subset of them is
// a candidate, and with a few dozen of them among 6000 operations the check ran
// into its timeout instead of failing in 0.3 s. An unknown transfer that is
// present stays unknown (it was applied at some point after its invoke, perhaps
// after the last read); a present one that would overdraw shows up as a final
// balance below zero (check_limits) or a mismatch in check_conservation. If an
// absent transfer was in fact applied and seen by a read before it was lost, no
// linearization explains that read and the check fails, as it should.
func resolveUnknown(ops []porcupine.Operation, present map[string]bool, c *counts) []porcupine.Operation {
	kept := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		in, out := op.Input.(input), op.Output.(output)
		if in.kind == kindTransfer && out.outcome == outcomeUnknown {
			if !present[in.id] {
				c.UnknownAbsent++
				continue
			}
			c.UnknownPresent++
		}
		kept = append(kept, op)
	}
	return kept
}

// stuck describes where the longest partial linearization ends: the operation
// with the earliest completion that could not be added to it, and the model
// state at that point.
type stuck struct {
	Linearized  int    `json:"linearized"`
	Operation   string `json:"operation"`
	Where       string `json:"where"`
	HistoryIdx  int64  `json:"history_index"`
	ModelState  string `json:"model_state"`
	Explanation string `json:"explanation"`
}

func findStuck(model porcupine.Model, ops []porcupine.Operation, info porcupine.LinearizationInfo) *stuck {
	partitions := info.PartialLinearizationsOperations()
	var best []porcupine.Operation
	for _, p := range partitions {
		for _, seq := range p {
			if len(seq) > len(best) {
				best = seq
			}
		}
	}
	done := map[int64]bool{}
	s := model.Init()
	for _, op := range best {
		done[op.Metadata.(meta).Index] = true
		_, s = model.Step(s, op.Input, op.Output)
	}
	var next *porcupine.Operation
	for i := range ops {
		if done[ops[i].Metadata.(meta).Index] {
			continue
		}
		if next == nil || ops[i].Return < next.Return {
			next = &ops[i]
		}
	}
	if next == nil {
		return nil
	}
	return &stuck{
		Linearized:  len(best),
		Operation:   model.DescribeOperation(next.Input, next.Output),
		Where:       describeMeta(next.Metadata),
		HistoryIdx:  next.Metadata.(meta).Index,
		ModelState:  model.DescribeState(s),
		Explanation: "no order of the operations concurrent with it makes this operation legal after the longest linearizable prefix",
	}
}

type summary struct {
	Result        string  `json:"result"`
	Linearizable  *bool   `json:"linearizable"`
	Model         string  `json:"model"`
	Operations    int     `json:"operations"`
	Accounts      int     `json:"accounts"`
	ElapsedS      float64 `json:"elapsed_s"`
	TimeoutS      float64 `json:"timeout_s"`
	Visualization string  `json:"visualization,omitempty"`
	Stuck         *stuck  `json:"stuck,omitempty"`
	Error         string  `json:"error,omitempty"`
	counts
}

func emit(s summary) {
	out, _ := json.Marshal(s)
	fmt.Println(string(out))
}

func main() {
	historyPath := flag.String("history", "", "history JSONL written by chaos/history.py (required)")
	initialPath := flag.String("initial", "", "JSON file {\"<account id>\": net balance} at the history's t0 (required)")
	timeout := flag.Duration("timeout", 60*time.Second, "give up after this long and exit 2 (0 = no limit)")
	visualize := flag.String("visualize", "", "write Porcupine's HTML visualization of the check to this path")
	presentPath := flag.String("present", "", "JSON array of the transfer ids in the final state: unknown transfers not in it are left out (see resolveUnknown)")
	modelName := flag.String("model", "nondeterministic", "how unknown outcomes are modelled: nondeterministic | deterministic (see the package comment)")
	flag.Parse()

	sum := summary{Model: *modelName, TimeoutS: timeout.Seconds()}
	fail := func(err error) {
		sum.Result = "BadInput"
		sum.Error = err.Error()
		emit(sum)
		fmt.Fprintln(os.Stderr, "ledger-porcupine:", err)
		os.Exit(exitBadInput)
	}
	if *historyPath == "" || *initialPath == "" || flag.NArg() != 0 {
		fail(errors.New("usage: ledger-porcupine -history PATH -initial PATH [-present PATH] [-timeout 60s] [-visualize PATH] [-model nondeterministic|deterministic]"))
	}
	b, err := loadInitial(*initialPath)
	if err != nil {
		fail(err)
	}
	ops, c, err := loadHistory(*historyPath, b)
	if err != nil {
		fail(err)
	}
	if *presentPath != "" {
		present, err := loadPresent(*presentPath)
		if err != nil {
			fail(err)
		}
		ops = resolveUnknown(ops, present, &c)
	}
	var model porcupine.Model
	switch *modelName {
	case "deterministic":
		model = b.deterministicModel()
	case "nondeterministic":
		model = b.nondeterministicModel()
	default:
		fail(fmt.Errorf("unknown -model %q", *modelName))
	}
	sum.counts = c
	sum.Operations = len(ops)
	sum.Accounts = len(b.accounts)

	started := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, ops, *timeout)
	sum.ElapsedS = time.Since(started).Seconds()
	sum.Result = string(res)
	code := exitUndecided
	switch res {
	case porcupine.Ok:
		t := true
		sum.Linearizable = &t
		code = exitLinearizable
	case porcupine.Illegal:
		f := false
		sum.Linearizable = &f
		sum.Stuck = findStuck(model, ops, info)
		code = exitNotLinearizable
	}
	if *visualize != "" {
		if err := porcupine.VisualizePath(model, info, *visualize); err != nil {
			fmt.Fprintln(os.Stderr, "ledger-porcupine: visualization:", err)
		} else {
			sum.Visualization = *visualize
		}
	}
	emit(sum)
	os.Exit(code)
}
