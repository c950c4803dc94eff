package overlaytest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestNoFatalOffTestGoroutine reads every test in the module and fails where a goroutine
// a test starts calls t.Fatal (or FailNow, Skip...) or a helper that does, such as
// Eventually: the testing package allows those only on the goroutine running the test
// (elsewhere they end the goroutine, not the test, and the test goes on unaware). go vet's
// testinggoroutine check sees direct calls only; this one follows helpers by name, within
// a package and into the helper packages a test imports.
func TestNoFatalOffTestGoroutine(t *testing.T) {
	root := moduleRoot(t)
	pkgs := map[string]*srcPkg{} // by import path
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (n == "testdata" || strings.HasPrefix(n, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		ip := modulePath + "/" + filepath.ToSlash(rel)
		if rel == "." {
			ip = modulePath
		}
		p := pkgs[ip]
		if p == nil {
			p = &srcPkg{path: ip, fset: token.NewFileSet()}
			pkgs[ip] = p
		}
		f, err := parser.ParseFile(p.fset, path, nil, 0)
		if err != nil {
			return err
		}
		p.files = append(p.files, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("read only %d packages under %s", len(pkgs), root)
	}
	for _, p := range pkgs {
		p.findFatal(pkgs)
	}
	// A second round, for helpers that call helpers of other packages.
	for _, p := range pkgs {
		p.findFatal(pkgs)
	}
	if !pkgs[modulePath+"/internal/eventually"].fatal["That"] || !pkgs[modulePath+"/e2e/overlaytest"].fatal["Eventually"] {
		t.Fatal("the check does not see that eventually.That and Eventually fail the test")
	}
	var bad []string
	for _, p := range pkgs {
		bad = append(bad, p.offGoroutine(pkgs)...)
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Errorf("%s: not allowed off the test goroutine (use Await, or return an error and t.Error)", b)
	}
}

const modulePath = "github.com/peerline/peerline"

func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module "+modulePath+"\n") {
			return dir
		}
		dir = filepath.Dir(dir)
	}
	t.Fatal("module root not found")
	return ""
}

// srcPkg is one directory's Go files.
type srcPkg struct {
	path  string
	fset  *token.FileSet
	files []*ast.File
	fatal map[string]bool // functions and methods (by name) that can end the test
}

// failNames are the testing.TB methods that end the calling goroutine.
var failNames = map[string]bool{"Fatal": true, "Fatalf": true, "FailNow": true, "Skip": true, "Skipf": true, "SkipNow": true}

// isTest reports whether x looks like a test's testing.TB: t, tb, b, or a field t or tb
// (o.t, l.t).
func isTest(x ast.Expr) bool {
	switch x := x.(type) {
	case *ast.Ident:
		return x.Name == "t" || x.Name == "tb" || x.Name == "b"
	case *ast.SelectorExpr:
		return x.Sel.Name == "t" || x.Sel.Name == "tb"
	}
	return false
}

// helperPkgs are the non-test packages whose functions may fail a test: the shared wait
// (its That) among them.
var helperPkgs = map[string]bool{
	modulePath + "/e2e/overlaytest":     true,
	modulePath + "/e2e/netlab":          true,
	modulePath + "/internal/eventually": true,
}

// imports maps a file's package names to import paths.
func imports(f *ast.File) map[string]string {
	m := map[string]string{}
	for _, s := range f.Imports {
		ip, _ := strconv.Unquote(s.Path.Value)
		name := ip[strings.LastIndex(ip, "/")+1:]
		if s.Name != nil {
			name = s.Name.Name
		}
		m[name] = ip
	}
	return m
}

// ends reports whether call (in file f) can end the goroutine that makes it.
func (p *srcPkg) ends(call *ast.CallExpr, imp map[string]string, pkgs map[string]*srcPkg) bool {
	switch fn := call.Fun.(type) {
	case *ast.Ident:
		return p.fatal[fn.Name]
	case *ast.SelectorExpr:
		if failNames[fn.Sel.Name] && isTest(fn.X) {
			return true
		}
		if id, ok := fn.X.(*ast.Ident); ok {
			if ip, ok := imp[id.Name]; ok { // pkg.Func
				q := pkgs[ip]
				return q != nil && q.fatal[fn.Sel.Name]
			}
		}
		// x.Method: a method of this package, or of a module package the file imports.
		if p.fatal[fn.Sel.Name] {
			return true
		}
		for _, ip := range imp {
			if q := pkgs[ip]; q != nil && q.fatal[fn.Sel.Name] {
				return true
			}
		}
	}
	return false
}

// findFatal adds to p.fatal every function or method whose own goroutine can end the
// test: it calls a fail method or such a helper, outside go statements.
func (p *srcPkg) findFatal(pkgs map[string]*srcPkg) {
	if p.fatal == nil {
		p.fatal = map[string]bool{}
	}
	for changed := true; changed; {
		changed = false
		for _, f := range p.files {
			if !helperPkgs[p.path] && !strings.HasSuffix(p.fset.File(f.Pos()).Name(), "_test.go") {
				continue // production code does not fail tests
			}
			imp := imports(f)
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil || p.fatal[fd.Name.Name] || strings.HasPrefix(fd.Name.Name, "Test") {
					continue
				}
				if p.callsEnd(fd.Body, imp, pkgs) {
					p.fatal[fd.Name.Name] = true
					changed = true
				}
			}
		}
	}
}

func (p *srcPkg) callsEnd(body ast.Node, imp map[string]string, pkgs map[string]*srcPkg) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			return false
		case *ast.CallExpr:
			if p.ends(n, imp, pkgs) {
				found = true
			}
		}
		return !found
	})
	return found
}

// offGoroutine lists the calls in p's test files that end a goroutine started by go.
func (p *srcPkg) offGoroutine(pkgs map[string]*srcPkg) []string {
	var out []string
	for _, f := range p.files {
		if !strings.HasSuffix(p.fset.File(f.Pos()).Name(), "_test.go") {
			continue
		}
		imp := imports(f)
		ast.Inspect(f, func(n ast.Node) bool {
			g, ok := n.(*ast.GoStmt)
			if !ok {
				return true
			}
			ast.Inspect(g.Call, func(m ast.Node) bool {
				if c, ok := m.(*ast.CallExpr); ok && p.ends(c, imp, pkgs) {
					out = append(out, p.fset.Position(c.Pos()).String())
				}
				return true
			})
			return false
		})
	}
	return out
}
