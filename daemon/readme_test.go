package daemon

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/sluicehq/sluice/internal/testenv"
)

// readmeConfig returns the HCL block of the README's Configuration
// section: the reference of every key the daemon's config takes.
func readmeConfig(t *testing.T) []byte {
	t.Helper()
	_, block, ok := strings.Cut(testenv.ReadmeSection(t, "## Configuration (`sluiced --config FILE`)"), "```hcl\n")
	if !ok {
		t.Fatal("README's Configuration section has no hcl block")
	}
	block, _, _ = strings.Cut(block, "```")
	return []byte(block)
}

// schemaKeys lists the dotted names of every attribute and block of an
// HCL schema struct, recursively (block labels are not keys).
func schemaKeys(typ reflect.Type, prefix string, out map[string]bool) {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, kind, _ := strings.Cut(f.Tag.Get("hcl"), ",")
		if name == "" || kind == "label" || kind == "remain" {
			continue
		}
		out[prefix+name] = true
		if kind == "block" {
			schemaKeys(f.Type, prefix+name+".", out)
		}
	}
}

// syntaxKeys lists the dotted names of what an HCL body sets.
func syntaxKeys(body *hclsyntax.Body, prefix string, out map[string]bool) {
	for name := range body.Attributes {
		out[prefix+name] = true
	}
	for _, b := range body.Blocks {
		out[prefix+b.Type] = true
		syntaxKeys(b.Body, prefix+b.Type+".", out)
	}
}

// TestReadmeConfigKeys: the README's Configuration block names every key
// of sluiced's config and nothing else, and decodes with the daemon's own
// schema (right types, right block shapes).
func TestReadmeConfigKeys(t *testing.T) {
	src := readmeConfig(t)
	f, diags := hclsyntax.ParseConfig(src, "README.md", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("README's config block is not valid HCL: %v", diags)
	}
	var fc fileConfig
	if d := gohcl.DecodeBody(f.Body, nil, &fc); d.HasErrors() {
		t.Errorf("README's config block does not decode with the daemon's schema: %v", d)
	}
	documented := map[string]bool{}
	syntaxKeys(f.Body.(*hclsyntax.Body), "", documented)
	code := map[string]bool{}
	schemaKeys(reflect.TypeOf(fileConfig{}), "", code)
	var missing, extra []string
	for k := range code {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !code[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("config keys the README's Configuration block does not document: %s", strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		t.Errorf("keys in the README's Configuration block that the daemon does not take: %s", strings.Join(extra, ", "))
	}
}
