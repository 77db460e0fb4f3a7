package mm7_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/phonebook/phonebook/mm7"
)

// A photo with a caption: the caption is a part of its own, and the SMIL
// shows it under the picture.
func ExampleBuildSMIL() {
	photo := mm7.Part{ContentType: "image/jpeg", ContentID: "p1", ContentLocation: "photo.jpg", Data: []byte("...")}
	fmt.Println(string(mm7.BuildSMIL([]mm7.Part{photo}, "Dinner at 7?")))
	// Output:
	// <smil><head><layout><root-layout width="100%" height="100%"/><region id="Image" left="0%" top="0%" width="100%" height="75%" fit="meet"/><region id="Text" left="0%" top="75%" width="100%" height="25%" fit="scroll"/></layout></head><body><par dur="5000ms"><img src="photo.jpg" region="Image"/><text src="caption.txt" region="Text"/></par></body></smil>
}

func ExampleClient_Submit() {
	c := mm7.NewClient(mm7.ClientConfig{URL: "https://mmsc.example.net/mm7", Username: "vasp", Password: "secret",
		VASPID: "phonebook", VASID: "im", Version: mm7.REL5})
	defer c.Close()
	photo := mm7.Part{ContentType: "image/jpeg", ContentID: "p1", ContentLocation: "photo.jpg", Data: []byte("...")}
	parts := []mm7.Part{photo, mm7.CaptionPart("Dinner at 7?")}
	rsp, err := c.Submit(context.Background(), &mm7.SubmitReq{
		SenderAddress: "10690042", To: []string{"+8613800138000"}, Subject: "A photo",
		Parts: parts, SMIL: mm7.BuildSMIL(parts, "Dinner at 7?"), DeliveryReport: true,
	})
	switch {
	case mm7.IsNotCapable(err):
		// send an SMS with a download link instead
	case err != nil && mm7.Temporary(err):
		// try again later: the MMSC may or may not have it
	case err != nil:
		// failed for good
	default:
		fmt.Println("delivery reports will quote", rsp.MessageID)
	}
}

func ExampleHandler() {
	http.Handle("/mm7", &mm7.Handler{
		Username: "mmsc", Password: "secret",
		DeliveryReport: func(ctx context.Context, r *mm7.DeliveryReportReq) mm7.Status {
			fmt.Println(r.MessageID, r.Recipient, r.MMStatus, r.Delivered())
			return mm7.NewStatus(mm7.StatusSuccess, "")
		},
		Deliver: func(ctx context.Context, r *mm7.DeliverReq) mm7.Status {
			fmt.Println("MMS from", r.Sender, "with", len(r.Parts), "parts")
			return mm7.NewStatus(mm7.StatusSuccess, "")
		},
	})
}
