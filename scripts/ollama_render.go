// Render an Ollama Modelfile TEMPLATE the way Ollama does: Go's text/template, with the values Ollama hands a
// template that ranges over .Messages (System, Messages, Tools, Response), built from a chat request as Ollama
// builds them: every system message joined into .System, consecutive messages of one role merged (tool results
// excepted), a call's arguments and a tool's parameters as maps (ranged in key order, printed as compact JSON),
// a parameter's type as a list printed as its one name. The template functions are Ollama's `json` and friends.
//
//	go run scripts/ollama_render.go < requests.jsonl     # per line {"template": "...", "messages": [...], "tools": [...]}
//
// prints one JSON string per request line: the prompt Ollama would send to the model.
// Used by tests/test_gguf.py to check the Modelfile's TEMPLATE against the run's Jinja template.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type propertyType []string

func (t *propertyType) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*t = propertyType{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*t = many
	return nil
}

func (t propertyType) String() string {
	switch len(t) {
	case 0:
		return ""
	case 1:
		return t[0]
	}
	return fmt.Sprintf("%v", []string(t))
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

type property struct {
	Type        propertyType `json:"type,omitempty"`
	Items       any          `json:"items,omitempty"`
	Description string       `json:"description,omitempty"`
	Enum        []any        `json:"enum,omitempty"`
}

type properties map[string]property

func (p properties) String() string { return compact(map[string]property(p)) }

type parameters struct {
	Type       string     `json:"type"`
	Required   []string   `json:"required,omitempty"`
	Properties properties `json:"properties"`
}

type function struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Parameters  parameters `json:"parameters"`
}

type tool struct {
	Type     string   `json:"type"`
	Function function `json:"function"`
}

func (t tool) String() string {
	return compact(struct {
		Type     string   `json:"type"`
		Function function `json:"function"`
	}(t))
}

type tools []tool

func (t tools) String() string { return compact([]tool(t)) }

type arguments map[string]any

func (a arguments) String() string {
	if a == nil {
		return "{}"
	}
	return compact(map[string]any(a))
}

type callFunction struct {
	Index     int       `json:"index"`
	Name      string    `json:"name"`
	Arguments arguments `json:"arguments"`
}

type call struct {
	ID       string       `json:"id"`
	Function callFunction `json:"function"`
}

type message struct {
	Role       string `json:"role"`
	Content    string `json:"content"`
	Thinking   string `json:"thinking"`
	ToolCalls  []call `json:"tool_calls"`
	ToolName   string `json:"tool_name"`
	ToolCallID string `json:"tool_call_id"`
}

type request struct {
	Template string    `json:"template"`
	Messages []message `json:"messages"`
	Tools    tools     `json:"tools"`
}

var funcs = template.FuncMap{
	"json":          compact,
	"currentDate":   func(...string) string { return "" },
	"yesterdayDate": func(...string) string { return "" },
}

func render(req request) (string, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(req.Template)
	if err != nil {
		return "", fmt.Errorf("the TEMPLATE does not parse: %w", err)
	}
	var system []string
	var merged []*message
	for i := range req.Messages {
		m := &req.Messages[i]
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if n := len(merged); n > 0 && merged[n-1].Role == m.Role && m.Role != "tool" {
			merged[n-1].Content += "\n\n" + m.Content
		} else {
			merged = append(merged, m)
		}
	}
	var tl tools
	if len(req.Tools) > 0 {
		tl = req.Tools
	}
	values := map[string]any{"System": strings.Join(system, "\n\n"), "Messages": merged, "Tools": tl, "Response": "",
		"Think": false, "ThinkLevel": "", "IsThinkSet": false}
	var out strings.Builder
	if err := tmpl.Execute(&out, values); err != nil {
		return "", fmt.Errorf("the TEMPLATE failed on this request: %w", err)
	}
	return out.String(), nil
}

func main() {
	in := json.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	for line := 1; in.More(); line++ {
		var req request
		if err := in.Decode(&req); err != nil {
			fmt.Fprintf(os.Stderr, "ollama_render: request %d is not JSON: %v\n", line, err)
			os.Exit(2)
		}
		text, err := render(req)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ollama_render: request %d: %v\n", line, err)
			os.Exit(3)
		}
		out.Encode(text)
	}
}
