package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// phoneMedia is what a phone session does with media: the uploads its
// messages carry (phone send --media) and where media that arrive are
// saved (--media-dir).
type phoneMedia struct {
	ctx   context.Context
	api   *client.API
	token string
	refs  []*relaypb.MediaRef
	dir   string
}

// newPhoneMedia uploads the --media files, if the command has the flag.
func newPhoneMedia(cmd *cobra.Command, st phoneState) (*phoneMedia, error) {
	pm := &phoneMedia{ctx: cmd.Context(), api: &client.API{BaseURL: st.Server}, token: st.token}
	if f := cmd.Flags().Lookup("media-dir"); f != nil {
		pm.dir = f.Value.String()
	}
	if cmd.Flags().Lookup("media") == nil {
		return pm, nil
	}
	files, _ := cmd.Flags().GetStringArray("media")
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		m, err := pm.api.UploadMedia(cmd.Context(), st.token, filepath.Base(name), f)
		f.Close()
		if err != nil {
			return nil, &exitError{code: exitRefused, err: fmt.Errorf("upload %s: %w", name, err)}
		}
		fmt.Fprintf(cmd.OutOrStdout(), "uploaded %s: %s, %d bytes, id %s\n", name, m.ContentType, m.Size, m.ID)
		pm.refs = append(pm.refs, &relaypb.MediaRef{Id: m.ID})
	}
	return pm, nil
}

// sendsNothing: no media to send, so a line needs a text.
func (pm *phoneMedia) sendsNothing() bool { return pm == nil || len(pm.refs) == 0 }

func (pm *phoneMedia) send(c *client.Client, to, text string) (*client.Pending, error) {
	if pm.sendsNothing() {
		return c.Send(to, text)
	}
	return c.SendMsg(&relaypb.Send{ClientMsgId: c.NewClientMsgID(), To: to, Text: text, Media: pm.refs})
}

// save downloads the media a message carries into the media directory and
// says where each went.
func (pm *phoneMedia) save(d *relaypb.Deliver) []string {
	if pm == nil || len(d.Media) == 0 {
		return nil
	}
	var lines []string
	for _, m := range d.Media {
		desc := fmt.Sprintf("  media %s, %d bytes", m.ContentType, m.Size)
		if pm.dir == "" {
			lines = append(lines, desc+" (not downloaded: --media-dir is empty)")
			continue
		}
		path, err := pm.download(m)
		if err != nil {
			lines = append(lines, fmt.Sprintf("%s: not downloaded: %v", desc, err))
			continue
		}
		lines = append(lines, desc+" saved to "+path)
	}
	return lines
}

func (pm *phoneMedia) download(m *relaypb.MediaRef) (string, error) {
	if err := os.MkdirAll(pm.dir, 0o750); err != nil {
		return "", err
	}
	name := m.Id + mediaExt(m.ContentType)
	if base := filepath.Base(m.Name); m.Name != "" && base != "." && base != "/" && base != ".." {
		name = m.Id + "-" + base
	}
	path := filepath.Join(pm.dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// A download cut short is resumed from what the file holds.
	off, err := f.Seek(0, 2)
	if err != nil {
		return "", err
	}
	if off >= int64(m.Size) && m.Size > 0 {
		return path, nil
	}
	ctx, cancel := context.WithTimeout(pm.ctx, 2*time.Minute)
	defer cancel()
	if _, _, err := pm.api.DownloadMedia(ctx, pm.token, m.Id, false, off, f); err != nil {
		return "", err
	}
	return path, nil
}

func mediaExt(ct string) string {
	if i := strings.IndexByte(ct, '/'); i >= 0 {
		switch sub := ct[i+1:]; sub {
		case "jpeg":
			return ".jpg"
		case "vcard":
			return ".vcf"
		case "3gpp":
			return ".3gp"
		case "mp4":
			if strings.HasPrefix(ct, "audio/") {
				return ".m4a"
			}
			return ".mp4"
		default:
			return "." + sub
		}
	}
	return ""
}
