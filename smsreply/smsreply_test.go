package smsreply

import "testing"

func TestNormalizeKeyword(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"TD", "TD"}, {"td", "TD"}, {" t d ", "TD"}, {"ＴＤ", "TD"}, {"ｔｄ。", "TD"}, {"Stop!", "STOP"},
		{"退订", "退订"}, {"退　订", "退订"}, {"UnSubscribe.", "UNSUBSCRIBE"}, {"START\n", "START"},
		{"TD please", "TDPLEASE"}, {"", ""}, {"👍", "👍"},
	} {
		if got := NormalizeKeyword(c.in); got != c.want {
			t.Errorf("NormalizeKeyword(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	good := Config{Mode: ModeExtension, ShortNumber: "10690", ExtensionDigits: 4, ExtensionIdle: 1, StickyRule: RuleAsk,
		OptOutKeywords: []string{"TD"}, OptInKeywords: []string{"START"}}
	if _, err := New(good, nil, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"mode":         func(c *Config) { c.Mode = "both" },
		"digits":       func(c *Config) { c.ExtensionDigits = 9 },
		"rule":         func(c *Config) { c.StickyRule = "first" },
		"short number": func(c *Config) { c.ShortNumber = "PHONEBOOK" },
		"too long":     func(c *Config) { c.ShortNumber = "1069012345678901234" },
		"same keyword": func(c *Config) { c.OptInKeywords = []string{"ｔｄ"} },
	} {
		c := good
		mod(&c)
		if _, err := New(c, nil, nil, nil, nil); err == nil {
			t.Errorf("%s: accepted %+v", name, c)
		}
	}
}
