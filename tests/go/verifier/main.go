// Command verifier checks raft-ledger certificates and receipts with code no one on the
// ledger project wrote: golang.org/x/mod/sumdb/note (C2SP signed-note, Ed25519 type 0x01)
// opens the certificate, and golang.org/x/mod/sumdb/tlog (RFC 6962 hashing) checks the
// inclusion proof. Only the line framing of our own formats is parsed here.
//
// Usage:
//
//	verifier -quorum N -vkey VKEY [-vkey VKEY ...] [-origin ORIGIN] RECEIPT_FILE
//	verifier -quorum N -vkey VKEY [-vkey VKEY ...] [-origin ORIGIN] -checkpoint NOTE_FILE
//
// VKEY is Go's verifier key text "<name>+<hex8 key hash>+<base64(0x01 || public key)>".
// A RECEIPT_FILE is a C2SP tlog-proof (https://c2sp.org/tlog-proof): the header line
// "c2sp.org/tlog-proof@v1", "extra <base64 transaction envelope>", "index <n>", one
// base64 proof hash per line, a blank line, then the certificate note verbatim.
// A certificate note is a C2SP signed note whose text is our checkpoint: origin, tree
// size, root hash, then exactly the extension lines height, block, state, validators,
// next-validators (in that order).
//
// Exit status 0 and one line "ok ..." on success; 1 and the reason on stderr otherwise;
// 2 for bad usage.
package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// fileBytesMax bounds what is read from disk; a receipt holds at most a 1 MiB transaction in base64 plus a note.
const fileBytesMax = 2 << 20

const proofHeader = "c2sp.org/tlog-proof@v1"

type vkeys []string

func (v *vkeys) String() string     { return strings.Join(*v, ",") }
func (v *vkeys) Set(s string) error { *v = append(*v, s); return nil }

type checkpoint struct {
	origin         string
	size           int64
	root           tlog.Hash
	height         int64
	block          []byte
	state          []byte
	validators     []byte
	nextValidators []byte
}

func main() {
	var keys vkeys
	quorum := flag.Int("quorum", 0, "number of distinct verified signers required (> 0)")
	origin := flag.String("origin", "", "expected checkpoint origin (checked when set)")
	checkpointOnly := flag.Bool("checkpoint", false, "FILE is a certificate note, not a receipt")
	flag.Var(&keys, "vkey", "verifier key of one validator (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 || *quorum <= 0 || len(keys) == 0 {
		fmt.Fprintln(os.Stderr, "usage: verifier -quorum N -vkey VKEY [-vkey ...] [-origin O] [-checkpoint] FILE")
		os.Exit(2)
	}
	msg, err := run(keys, *quorum, *origin, *checkpointOnly, flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "reject:", err)
		os.Exit(1)
	}
	fmt.Println(msg)
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, fileBytesMax+1))
	if err != nil {
		return nil, err
	}
	if len(data) > fileBytesMax {
		return nil, fmt.Errorf("file over %d bytes", fileBytesMax)
	}
	return data, nil
}

func run(keys []string, quorum int, origin string, checkpointOnly bool, path string) (string, error) {
	data, err := readFile(path)
	if err != nil {
		return "", err
	}
	var verifiers []note.Verifier
	for _, k := range keys {
		v, err := note.NewVerifier(k)
		if err != nil {
			return "", fmt.Errorf("bad -vkey %q: %v", k, err)
		}
		verifiers = append(verifiers, v)
	}
	if checkpointOnly {
		cp, signers, err := openCertificate(data, verifiers, quorum, origin)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("ok checkpoint origin=%s size=%d height=%d signers=%d", cp.origin, cp.size, cp.height, signers), nil
	}
	extra, index, proof, noteBytes, err := parseProof(data)
	if err != nil {
		return "", err
	}
	cp, signers, err := openCertificate(noteBytes, verifiers, quorum, origin)
	if err != nil {
		return "", err
	}
	if index >= cp.size {
		return "", fmt.Errorf("index %d not below tree size %d", index, cp.size)
	}
	if err := tlog.CheckRecord(proof, cp.size, cp.root, index, tlog.RecordHash(extra)); err != nil {
		return "", fmt.Errorf("inclusion proof: %v", err)
	}
	return fmt.Sprintf("ok receipt index=%d size=%d height=%d signers=%d", index, cp.size, cp.height, signers), nil
}

// openCertificate verifies the note's signatures with note.Open and counts the distinct
// verified signers (note.Open already drops repeated signatures of one key and fails on
// a known key's bad signature).
func openCertificate(data []byte, verifiers []note.Verifier, quorum int, origin string) (*checkpoint, int, error) {
	n, err := note.Open(data, note.VerifierList(verifiers...))
	if err != nil {
		return nil, 0, fmt.Errorf("note: %v", err)
	}
	signers := map[string]bool{}
	for _, s := range n.Sigs {
		signers[fmt.Sprintf("%s+%08x", s.Name, s.Hash)] = true
	}
	if len(signers) < quorum {
		return nil, 0, fmt.Errorf("only %d verified signers, quorum is %d", len(signers), quorum)
	}
	cp, err := parseCheckpoint(n.Text)
	if err != nil {
		return nil, 0, err
	}
	if origin != "" && cp.origin != origin {
		return nil, 0, fmt.Errorf("origin %q, want %q", cp.origin, origin)
	}
	return cp, len(signers), nil
}

func parseDecimal(what, s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || strconv.FormatInt(v, 10) != s {
		return 0, fmt.Errorf("checkpoint: %s %q is not a canonical decimal", what, s)
	}
	return v, nil
}

func parseHash(what, s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != tlog.HashSize || base64.StdEncoding.EncodeToString(b) != s {
		return nil, fmt.Errorf("%s %q is not the base64 of %d bytes", what, s, tlog.HashSize)
	}
	return b, nil
}

func parseCheckpoint(text string) (*checkpoint, error) {
	if !strings.HasSuffix(text, "\n") {
		return nil, errors.New("checkpoint: text does not end in newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != 8 {
		return nil, fmt.Errorf("checkpoint: %d lines, want 8", len(lines))
	}
	cp := &checkpoint{origin: lines[0]}
	if cp.origin == "" {
		return nil, errors.New("checkpoint: empty origin")
	}
	var err error
	if cp.size, err = parseDecimal("tree size", lines[1]); err != nil {
		return nil, err
	}
	root, err := parseHash("checkpoint: root hash", lines[2])
	if err != nil {
		return nil, err
	}
	copy(cp.root[:], root)
	ext := []struct {
		key string
		dst *[]byte
	}{{"block", &cp.block}, {"state", &cp.state}, {"validators", &cp.validators}, {"next-validators", &cp.nextValidators}}
	h, ok := strings.CutPrefix(lines[3], "height ")
	if !ok {
		return nil, fmt.Errorf("checkpoint: line 4 %q is not 'height <n>'", lines[3])
	}
	if cp.height, err = parseDecimal("height", h); err != nil {
		return nil, err
	}
	for i, e := range ext {
		v, ok := strings.CutPrefix(lines[4+i], e.key+" ")
		if !ok {
			return nil, fmt.Errorf("checkpoint: line %d %q is not '%s <base64>'", 5+i, lines[4+i], e.key)
		}
		if *e.dst, err = parseHash("checkpoint: "+e.key, v); err != nil {
			return nil, err
		}
	}
	return cp, nil
}

// parseProof splits a C2SP tlog-proof into its extra data, index, proof hashes and the
// checkpoint note (everything after the first empty line, verbatim).
func parseProof(data []byte) (extra []byte, index int64, proof tlog.RecordProof, noteBytes []byte, err error) {
	rest := data
	next := func() (string, bool) {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return "", false
		}
		line := string(rest[:i])
		rest = rest[i+1:]
		return line, true
	}
	line, ok := next()
	if !ok || line != proofHeader {
		return nil, 0, nil, nil, fmt.Errorf("receipt: first line is not %q", proofHeader)
	}
	line, ok = next()
	if b64, found := strings.CutPrefix(line, "extra "); ok && found {
		extra, err = base64.StdEncoding.Strict().DecodeString(b64)
		if err != nil || base64.StdEncoding.EncodeToString(extra) != b64 {
			return nil, 0, nil, nil, errors.New("receipt: extra is not canonical base64")
		}
		line, ok = next()
	}
	if len(extra) == 0 {
		return nil, 0, nil, nil, errors.New("receipt: no extra line (the transaction), or an empty one")
	}
	idx, found := strings.CutPrefix(line, "index ")
	if !ok || !found {
		return nil, 0, nil, nil, errors.New("receipt: missing index line")
	}
	if index, err = parseDecimal("index", idx); err != nil {
		return nil, 0, nil, nil, fmt.Errorf("receipt: %v", err)
	}
	for {
		line, ok = next()
		if !ok {
			return nil, 0, nil, nil, errors.New("receipt: no blank line before the checkpoint")
		}
		if line == "" {
			break
		}
		b, err := parseHash("receipt: proof hash", line)
		if err != nil {
			return nil, 0, nil, nil, err
		}
		var h tlog.Hash
		copy(h[:], b)
		proof = append(proof, h)
	}
	return extra, index, proof, rest, nil
}
