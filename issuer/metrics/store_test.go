package metrics

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/mwi-project/mwi/issuer/store"
)

// TestEveryStoreMethodTimed checks that timedStore declares each method of
// store.Store itself, with its operation label, rather than passing it
// through the embedded store untimed: a method added to the interface
// later must be added here too.
func TestEveryStoreMethodTimed(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "store.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv == nil || len(fn.Recv.List) != 1 {
			continue
		}
		if star, ok := fn.Recv.List[0].Type.(*ast.StarExpr); ok {
			if id, ok := star.X.(*ast.Ident); ok && id.Name == "timedStore" {
				declared[fn.Name.Name] = true
			}
		}
	}
	it := reflect.TypeFor[store.Store]()
	for i := range it.NumMethod() {
		name := it.Method(i).Name
		if name == "Close" {
			continue
		}
		if !declared[name] {
			t.Errorf("timedStore does not time store.Store.%s", name)
		}
		if op := snake(name); !slices.Contains(storeOperations, op) {
			t.Errorf("storeOperations lacks %q (store.Store.%s)", op, name)
		}
	}
}

// snake turns a method name into its operation label: AdvanceGeneration
// into advance_generation.
func snake(name string) string {
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
